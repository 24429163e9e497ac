"""GMFSS union: golden pairs, odd sizes, per-frame caching and batching, softmax splatting, GMFlow split."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch

from helpers.frames import GOLDEN, psnr
from helpers.pipelines import MIN_PSNR
from multipassdedup.core import ModelFrame, PairRequest, load_model
from multipassdedup.core.layers.softsplat import SoftmaxSplatter, splat_sum
from multipassdedup.core.models.gmfss import GmfssInterpolator


@pytest.fixture(scope="module")
def model() -> GmfssInterpolator:
    m = load_model("gmfss", device="cpu")
    assert isinstance(m, GmfssInterpolator)
    return m


@pytest.mark.parametrize("case", ["0_2", "5_7", "16_19"])
def test_golden_pair(model: GmfssInterpolator, case: str) -> None:
    z = np.load(GOLDEN / f"pair_gmfss_cel_a_{case}.npz")
    ts = json.loads(str(z["params"]))["ts"]
    out = model.interpolate(z["input"][0], z["input"][1], ts)
    assert len(out) == len(z["output"]) == len(ts)
    for t, got, ref in zip(ts, out, z["output"]):
        assert got.shape == ref.shape and got.dtype == np.uint8
        assert psnr(got, ref) >= MIN_PSNR, f"t={t}: {psnr(got, ref):.1f} dB"


def _panning_scene(shift: float, h: int, w: int) -> np.ndarray:
    """Smooth colour waves panning by ``shift`` px with a square moving three times as fast."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    xs = x + shift
    img = np.stack([120 + 60 * np.sin(xs / 13) * np.cos(y / 17), 110 + 50 * np.cos(xs / 9 + y / 21),
                    130 + 40 * np.sin((xs + y) / 15)], -1)
    img[(np.abs(y - 60) < 12) & (np.abs(x - 80 - 2 * shift) < 12)] = (30, 40, 200)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_odd_size_keeps_size_and_compensates_motion(model: GmfssInterpolator) -> None:
    a, mid, b = (_panning_scene(s, 130, 250) for s in (0, 8, 16))
    out = model.interpolate(a, b, [0.5])
    assert len(out) == 1 and out[0].shape == (130, 250, 3) and out[0].dtype == np.uint8
    blend = (a.astype(np.float64) + b) / 2
    assert psnr(out[0], mid) > psnr(blend, mid) + 1.0  # a motion-compensated midpoint beats a cross-fade


def test_alignment_meets_network_needs(model: GmfssInterpolator) -> None:
    for scale in (0.25, 0.5, 1.0, 2.0, 4.0):
        align = model.alignment(scale)
        assert align % model.required_multiple(scale) == 0, scale
    assert model.alignment(1.0) == 128
    with pytest.raises(ValueError, match="multiples of 64"):
        model.interpolate_tensors(torch.rand(1, 3, 96, 128), torch.rand(1, 3, 96, 128), [0.5])


def _frames(n: int) -> list[ModelFrame]:
    """``n`` consecutive 64x128 crops of the golden clip as model frames."""
    clip = np.load(GOLDEN / "run_gmfss_cel_a_np3_fps60_t-1_sc1.npz")["input"]
    return [ModelFrame(torch.from_numpy(np.ascontiguousarray(clip[4 + i, 32:96, 64:192, ::-1]))
                       .permute(2, 0, 1).unsqueeze(0).float() / 255) for i in range(n)]


def _flat(outs: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [t for per_pair in outs for t in per_pair]


def _max_diff(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
    assert [len(o) for o in a] == [len(o) for o in b]
    return max((x - y).abs().max().item() for x, y in zip(_flat(a), _flat(b)))


def _run(model: GmfssInterpolator, cached: bool, calls: list[list[tuple[int, int, list[float]]]]):
    """Run pair requests over fresh frames a, b, c, grouped into interpolate_batch calls."""
    model.cache_frame_features = cached
    frames = _frames(3)
    before = model.stats.frame_features
    try:
        outs = [o for call in calls
                for o in model.interpolate_batch([PairRequest(frames[i], frames[j], ts) for i, j, ts in call])]
    finally:
        model.cache_frame_features = True
    return outs, model.stats.frame_features - before, frames


@pytest.mark.parametrize("split", [False, True], ids=["one_call", "two_calls"])
def test_frame_features_computed_once_per_frame(model: GmfssInterpolator, split: bool) -> None:
    ab, bc = (0, 1, [0.5]), (1, 2, [0.25, 0.5])
    calls = [[ab], [bc]] if split else [[ab, bc]]
    plain, plain_count, plain_frames = _run(model, False, calls)
    cached, cached_count, cached_frames = _run(model, True, calls)
    assert plain_count == 4 and cached_count == 3
    assert all(not f.cache for f in plain_frames) and all(len(f.cache) == 1 for f in cached_frames)
    assert [o[0].shape for o in cached] == [(1, 3, 64, 128)] * 2
    # The cached run makes batches of other shapes, which take other kernel paths (which ones depends on the CPU:
    # 1.3e-4 apart with AMX): equal to well under one 8-bit level, as for batches below.
    assert _max_diff(cached, plain) < 1e-3


def test_batch_equals_pair_by_pair(model: GmfssInterpolator) -> None:
    f = _frames(3)
    batched = model.interpolate_batch([PairRequest(f[0], f[1], [0.5]), PairRequest(f[1], f[2], [0.3, 0.7]),
                                       PairRequest(f[0], f[2], [])])
    assert batched[2] == []
    single = [model.interpolate_tensors(f[0].tensor, f[1].tensor, [0.5]),
              model.interpolate_tensors(f[1].tensor, f[2].tensor, [0.3, 0.7])]
    # Batches of different sizes take different kernel paths: equal to well under one 8-bit level.
    assert _max_diff(batched[:2], single) < 1e-3


def test_gmflow_bidirectional_equals_two_one_way_calls(model: GmfssInterpolator) -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(1, 3, 64, 128, generator=g), torch.rand(1, 3, 64, 128, generator=g)
    net = model.flownet
    with torch.inference_mode():
        ea, eb = net.encode(a), net.encode(b)
        f01, f10 = net.bidirectional_flow(ea, eb)
        assert torch.allclose(f01, net(a, b), atol=1e-4)
        assert torch.allclose(f10, net(b, a), atol=1e-4)
        assert f01.shape == (1, 2, 64, 128)


# -- softmax splatting ---------------------------------------------------------------------------


def test_splat_zero_flow_is_identity() -> None:
    g = torch.Generator().manual_seed(3)
    values = torch.rand(2, 5, 6, 7, generator=g)
    metric = torch.randn(2, 1, 6, 7, generator=g)
    out = SoftmaxSplatter()(values, torch.zeros(2, 2, 6, 7), metric)
    assert torch.allclose(out, values, atol=1e-6)


def test_splat_integer_flow_moves_pixel_exactly() -> None:
    values = torch.zeros(1, 2, 5, 6)
    values[0, :, 1, 2] = torch.tensor([0.7, 0.2])
    flow = torch.zeros(1, 2, 5, 6)
    flow[0, :, 1, 2] = torch.tensor([3.0, 2.0])  # (x, y) = (2, 1) -> (5, 3)
    summed = splat_sum(values, flow)
    expected = torch.zeros_like(values)
    expected[0, :, 3, 5] = torch.tensor([0.7, 0.2])
    assert torch.equal(summed, expected)


def test_splat_fractional_flow_spreads_bilinearly_and_drops_outside() -> None:
    values = torch.zeros(1, 1, 4, 4)
    values[0, 0, 0, 0] = 1.0
    values[0, 0, 3, 3] = 1.0
    flow = torch.zeros(1, 2, 4, 4)
    flow[0, :, 0, 0] = torch.tensor([1.25, 0.5])  # lands at (1.25, 0.5)
    flow[0, :, 3, 3] = torch.tensor([0.5, 0.0])  # half of it leaves the frame
    flow[0, :, 2, 2] = float("nan")  # a non-finite flow drops its (zero) value without poisoning anything
    out = splat_sum(values, flow)[0, 0]
    assert out[0, 1].item() == pytest.approx(0.75 * 0.5)
    assert out[0, 2].item() == pytest.approx(0.25 * 0.5)
    assert out[1, 1].item() == pytest.approx(0.75 * 0.5)
    assert out[1, 2].item() == pytest.approx(0.25 * 0.5)
    assert out[3, 3].item() == pytest.approx(0.5)
    assert out.sum().item() == pytest.approx(1.5)
    assert torch.isfinite(out).all()


def test_softmax_weights_resolve_collisions() -> None:
    values = torch.tensor([[[[1.0, 0.5, 0.0]]]])
    flow = torch.tensor([[[[1.0, 1.0, -1.0]], [[0.0, 0.0, 0.0]]]])  # pixels 0 and 2 land on 1, pixel 1 on 2
    metric = torch.tensor([[[[2.0, 0.0, -1.0]]]])
    out = SoftmaxSplatter()(values, flow, metric)[0, 0, 0]
    w0, w2 = np.exp(2.0), np.exp(-1.0)
    assert out[1].item() == pytest.approx(w0 / (w0 + w2 + 1e-7), rel=1e-6)
    assert out[2].item() == pytest.approx(0.5, rel=1e-6)
    assert out[0].item() == 0.0  # nothing landed there


def test_cuda_kernel_falls_back_when_cupy_is_missing(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    splatter = SoftmaxSplatter()
    with caplog.at_level(logging.INFO, logger="multipassdedup.core.layers.softsplat"):
        assert splatter._cuda_splat(torch.device("cpu")) is None
        assert splatter._cuda_splat(torch.device("cpu")) is None
    assert sum("PyTorch path" in r.getMessage() for r in caplog.records) == 1
