"""The engine reproduces the reference program: every golden case, every frame >= 45 dB."""

from __future__ import annotations

import pytest

from helpers.frames import load_golden, psnr
from helpers.pipelines import MIN_PSNR, run_pipeline

PAIRS = ["pair_rife_cel_a_0_2", "pair_rife_cel_a_5_7", "pair_rife_cel_a_16_19"]  # gmfss pairs: test_gmfss.py
RUNS = ["run_rife_cel_a_np0_fps60_t-1_sc1", "run_rife_cel_a_np2_fps60_t2_sc0", "run_rife_cel_a_np3_fps60_t-1_sc1",
        "run_gmfss_cel_a_np3_fps60_t-1_sc1"]


def _model(request, name: str):
    return request.getfixturevalue(name)


@pytest.mark.parametrize("case", PAIRS)
def test_golden_pair(case: str, request) -> None:
    inp, ref, params = load_golden(case)
    model = _model(request, params["model"])
    out = model.interpolate(inp[0], inp[1], params["ts"])
    assert len(out) == len(ref)
    for i, (a, b) in enumerate(zip(out, ref)):
        assert psnr(a, b) >= MIN_PSNR, f"{case} t={params['ts'][i]}: {psnr(a, b):.1f} dB"


@pytest.mark.parametrize("case", RUNS)
def test_golden_run(case: str, request) -> None:
    inp, ref, params = load_golden(case)
    out, _ = run_pipeline(_model(request, params["model"]), inp, params, compensate_delay=False)
    assert len(out) == len(ref)
    worst = min(psnr(a, b) for a, b in zip(out, ref))
    assert worst >= MIN_PSNR, f"{case}: worst frame {worst:.1f} dB"


def test_reference_order_equals_wavefront(rife) -> None:
    """Scheduling the passes as a wavefront changes when frames are computed, not what they are."""
    inp, _, params = load_golden("run_rife_cel_a_np3_fps60_t-1_sc1")
    inp = inp[10:18]
    a, pa = run_pipeline(rife, inp, params, wavefront=True)
    b, pb = run_pipeline(rife, inp, params, wavefront=False, skip_duplicates=False)
    assert len(a) == len(b)
    assert min(psnr(x, y) for x, y in zip(a, b)) >= 50
    assert pa.stats.batches < pb.stats.batches
