"""GIMM-VFI-R: golden pairs from synthetic weights loaded as a user's two files, the state-dict layout,
per-pair work shared by a pair's times, the weight loader's errors, the memory estimate and plan."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.frames import psnr
from helpers.gimm_synthetic import GIMM_FILE, RAFT_FILE, load_spec, synthetic_state_dict, write_user_files
from helpers.pipelines import MIN_PSNR
from multipassdedup.core import ModelFrame, PairRequest
from multipassdedup.core.layers.frames import to_tensor
from multipassdedup.core.models.gimm import (
    BLEND_CHANNELS,
    CUDA_HEADROOM,
    CallPlan,
    GimmInterpolator,
    GimmMemoryError,
    GimmWeightsError,
)
from multipassdedup.daemon.scheduler import is_out_of_memory

GOLDEN = Path(__file__).parent / "golden" / "gimm"
MAX_MAE = 1e-3
CPU = torch.device("cpu")


class RecordingGimm(GimmInterpolator):
    """The real interpolator, also keeping the float frames its network returned (before quantisation)."""

    def _infer_batch(self, requests: list[PairRequest], scale: float) -> list[list[torch.Tensor]]:
        out = super()._infer_batch(requests, scale)
        self.recorded = list(out)
        return out


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return synthetic_state_dict()


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory, state: dict[str, torch.Tensor]) -> dict[str, Path]:
    return write_user_files(tmp_path_factory.mktemp("gimm-weights"), state)


@pytest.fixture(scope="module")
def model(user_files: dict[str, Path]) -> RecordingGimm:
    return RecordingGimm.from_files(user_files, CPU, torch.float32)


def test_state_dict_is_the_spec(model: GimmInterpolator, state: dict[str, torch.Tensor]) -> None:
    _gain, spec = load_spec()
    own = model.net.state_dict()
    assert [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in own.items()] == \
        [(k, s, d) for k, s, d in spec]
    # Both files together set every tensor to the synthetic value. A shortcut norm registered twice
    # (norm3 and downsample.1) takes the value of the key loaded last, as in the original.
    for key, value in own.items():
        alias = key.replace(".norm3.", ".downsample.1.")
        assert torch.equal(value, state[alias]), key


@pytest.mark.parametrize("case", ["0_2", "16_19"])
def test_golden_pair(model: RecordingGimm, case: str) -> None:
    z = np.load(GOLDEN / f"pair_gimm_cel_a_{case}.npz")
    ts = json.loads(str(z["params"]))["ts"]
    reference = z["output_float"]  # (T, 3, H, W) RGB
    runs, encoded, calls = model.pair_work_runs, model.stats.frame_features, model.stats.batches
    out = model.interpolate(z["input"][0], z["input"][1], ts)
    # One pair: its frames encoded once, RAFT both ways and the motion encoding once for all three times.
    assert model.pair_work_runs == runs + 1
    assert model.stats.frame_features == encoded + 2
    assert model.stats.batches == calls + 1
    floats = model.recorded[0]
    assert len(out) == len(floats) == len(ts) == len(reference)
    for t, got, frame, ref in zip(ts, out, floats, reference):
        rgb = frame[0].flip(0).numpy()  # the network works in BGR
        mae = float(np.abs(rgb - ref).mean())
        assert mae <= MAX_MAE, f"t={t}: mean absolute error {mae:.2e}"
        ref8 = np.clip(np.round(ref * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        assert got.shape == ref8.shape and got.dtype == np.uint8
        assert psnr(got, ref8) >= MIN_PSNR, f"t={t}: {psnr(got, ref8):.1f} dB"


def test_ends_of_the_interval_are_the_inputs(model: GimmInterpolator) -> None:
    x, y = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    runs = model.pair_work_runs
    out = model.interpolate_batch([PairRequest(ModelFrame(x), ModelFrame(y), [1.0, 0.0])])[0]
    assert torch.equal(out[0], y) and torch.equal(out[1], x)
    assert model.pair_work_runs == runs  # no network work when no time lies inside


def test_alignment_is_64_over_scale(model: GimmInterpolator) -> None:
    assert [model.alignment(s) for s in (0.25, 0.5, 1.0, 2.0)] == [256, 128, 64, 32]
    with pytest.raises(ValueError, match="multiples of 64"):
        model.interpolate_tensors(torch.rand(1, 3, 96, 128), torch.rand(1, 3, 96, 128), [0.5])


def test_gimm_file_without_the_raft_part_loads(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    files = write_user_files(tmp_path, state, repeat_raft_in_gimm=False)
    loaded = GimmInterpolator.from_files(files, CPU, torch.float32).net.state_dict()
    key = "flow_estimator.update_block.gru.convz1.weight"
    assert torch.equal(loaded[key], state[key])


def test_weights_left_unset_are_named(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    dropped = ["flow_estimator.fnet.conv1.weight", "hyponet.params_dict.linear_wb4"]
    files = write_user_files(tmp_path, {k: v for k, v in state.items() if k not in dropped},
                             repeat_raft_in_gimm=False)
    with pytest.raises(GimmWeightsError) as err:
        GimmInterpolator.from_files(files, CPU, torch.float32)
    message = str(err.value)
    assert "\n" not in message and "2 tensors unset" in message
    assert all(k in message for k in dropped)


def test_wrong_shape_and_unreadable_files_are_one_line_errors(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    bad = dict(state, **{"amt_fproj.weight": torch.zeros(128, 256, 1, 1)})
    files = write_user_files(tmp_path, bad)
    with pytest.raises(GimmWeightsError, match=r"amt_fproj.weight has shape \(128, 256, 1, 1\)"):
        GimmInterpolator.from_files(files, CPU, torch.float32)
    (tmp_path / RAFT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(GimmWeightsError, match=f"cannot read gimm weight file .*{RAFT_FILE}") as err:
        GimmInterpolator.from_files(files, CPU, torch.float32)
    assert "\n" not in str(err.value)
    assert files["gimm"].name == GIMM_FILE


@pytest.mark.parametrize("height, width, times, scale", [(128, 128, 1, 1.0), (256, 256, 2, 0.25)])
def test_memory_estimate_matches_a_real_call(user_files: dict[str, Path], height: int, width: int, times: int,
                                             scale: float) -> None:
    """The estimate against the peak resident memory of one call in a fresh process (within 25 %). The two
    cases peak in different places: the decoder at the flow scale, and the blend at full size."""
    probe = Path(__file__).with_name("gimm_memory_probe.py")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run([sys.executable, str(probe), str(user_files["raft"].parent), str(height), str(width),
                           str(times), str(scale)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(result["estimate"] - result["measured"]) <= 0.25 * result["measured"], result


def test_memory_estimate_grows_as_the_original_did(model: GimmInterpolator) -> None:
    gib = 2 ** 30
    full_hd = model.call_bytes(1088, 1920, 1.0, 1)
    assert full_hd > 17 * gib  # the original needed more than 17 GB at 1080p, scale 1
    assert model.call_bytes(1088, 1920, 0.5, 1) < full_hd / 4
    assert model.call_bytes(1088, 1920, 1.0, 2) > full_hd


def test_plan_splits_times_then_lowers_the_scale(model: GimmInterpolator) -> None:
    one, two = model.call_bytes(1088, 1920, 1.0, 1), model.call_bytes(1088, 1920, 1.0, 2)
    model.max_batch_pixels = None  # as on a GPU
    try:
        assert model.plan(1088, 1920, 1.0, 4, None).times_per_call == 4
        assert model.plan(1088, 1920, 1.0, 4, int(two * 1.3)).times_per_call == 2
        small = model.plan(1088, 1920, 1.0, 4, int(one * 1.1))
        assert small.scale == 0.5 and small.times_per_call == 1
        nothing = model.plan(1088, 1920, 1.0, 1, 0)
        assert (nothing.scale, nothing.fits) == (0.25, False)  # the lowest the padding allows, refused
    finally:
        model.max_batch_pixels = model.cpu_batch_pixels


def test_the_full_size_final_stage_sets_a_floor_and_below_it_the_plan_refuses(model: GimmInterpolator) -> None:
    """With a fake free-memory figure: the plan (a pure function) at 4K, where even the lowest flow scale needs
    gigabytes because the final warp and blend run at full size."""
    h, w = 2176, 3840  # 2160p padded to 64 / 0.25
    floor = model.call_bytes(h, w, 0.25, 1)
    assert floor >= (BLEND_CHANNELS + 3) * 4 * h * w > 4 * 10 ** 9  # the full-size blend and output are counted
    assert model.call_bytes(h, w, 0.25, 1) < model.call_bytes(h, w, 0.5, 1)
    model.max_batch_pixels = None
    try:
        assert model.plan(h, w, 1.0, 3, None) == CallPlan(1.0, 3, True)
        assert model.plan(h, w, 1.0, 3, int(floor * CUDA_HEADROOM)) == CallPlan(0.25, 1, True)
        assert model.plan(h, w, 1.0, 3, int(floor * 1.05)) == CallPlan(0.25, 1, True)  # tried: it may still fit
        assert model.plan(h, w, 1.0, 3, int(floor * 0.95)) == CallPlan(0.25, 1, False)
        assert model.plan(h, w, 0.25, 2, int(floor * 0.95)) == CallPlan(0.25, 1, False)  # nothing lower to go to
    finally:
        model.max_batch_pixels = model.cpu_batch_pixels


class SmallDeviceGimm(GimmInterpolator):
    """The real interpolator on the CPU, told it has a fixed amount of free device memory."""

    free_bytes = 0

    def _available_bytes(self) -> int | None:
        return self.free_bytes


def test_a_pair_too_large_for_the_device_runs_at_a_lower_scale_logged_once(
        user_files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    model = SmallDeviceGimm.from_files(user_files, CPU, torch.float32)
    model.free_bytes = int(model.call_bytes(128, 128, 1.0, 1) * 0.9)
    assert model.plan(128, 128, 1.0, 1, model.free_bytes).scale == 0.5
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[40:80, 30:70] = 200
    x, y = ModelFrame(to_tensor(frame, CPU)), ModelFrame(to_tensor(np.roll(frame, 8, 1), CPU))
    with caplog.at_level(logging.WARNING, logger="multipassdedup.core.models.gimm"):
        for t in (0.25, 0.5):
            out = model.interpolate_batch([PairRequest(x, y, [t])])[0]
            assert out[0].shape == (1, 3, 128, 128) and bool(torch.isfinite(out[0]).all())
    notes = [r.getMessage() for r in caplog.records if "instead" in r.getMessage()]
    assert len(notes) == 1 and "scale 0.5 instead" in notes[0], notes
    assert ("gimm", 0.5) in x.cache and ("gimm", 1.0) not in x.cache  # the frames' work is at the scale used
    assert model.stats.frame_features == 2 and model.pair_work_runs == 2


def test_a_pair_that_fits_nowhere_is_refused_in_one_line_before_any_work(user_files: dict[str, Path]) -> None:
    model = SmallDeviceGimm.from_files(user_files, CPU, torch.float32)
    model.free_bytes = 2 ** 20
    x, y = ModelFrame(torch.rand(1, 3, 128, 128)), ModelFrame(torch.rand(1, 3, 128, 128))
    with pytest.raises(GimmMemoryError) as err:
        model.interpolate_batch([PairRequest(x, y, [0.5])])
    message = str(err.value)
    assert "\n" not in message and "128x128 pair needs about" in message and "at flow scale 0.25" in message
    assert not x.cache and model.pair_work_runs == 0 and model.stats.frame_features == 0
    assert is_out_of_memory(err.value)  # the daemon ends that session as out of memory and serves the others
