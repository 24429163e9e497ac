"""The speed benchmark's two pipelines do the work they claim (rife, tiny frames)."""

import pytest
import torch

from multipassdedup.bench.speed import engine_table, engine_worker, run_concurrently


def run(variant: str, precision: str = "fp32") -> dict:
    cfg = {"kind": "engine", "model": "rife", "width": 128, "height": 64, "frames": 4, "clip": "mixed_static",
           "n_pass": 3, "variant": variant, "threads": 1, "precision": precision}
    threads = torch.get_num_threads()
    try:
        return {**cfg, **engine_worker(cfg)}
    finally:
        torch.set_num_threads(threads)  # the worker normally owns its process


def test_straightforward_makes_one_network_call_per_frame_and_the_optimised_batches():
    plain, fast = run("straightforward"), run("optimised")
    assert plain["frames_out"] == fast["frames_out"] > 10
    ps, fs = plain["model_stats"], fast["model_stats"]
    assert ps["batches"] == ps["model_calls"] == ps["pairs"]  # one (pair, t) per network call
    assert plain["pipeline"]["duplicate_skips"] == 0
    assert fs["batches"] < fs["model_calls"]
    assert fast["pipeline"]["duplicate_skips"] > 0  # a static background with held drawings has exact repeats
    assert fs["model_calls"] + fast["pipeline"]["duplicate_skips"] == ps["model_calls"]
    assert plain["peak_rss_mb"] > 50
    table = engine_table([plain, fast])
    assert "| rife | 128x64 | straightforward |" in table and "1.00x" in table


def test_auto_is_shown_with_what_it_resolved_to():
    plain, auto = run("straightforward"), run("optimised", "auto")
    assert auto["requested_precision"] == "auto" and auto["precision"] in ("fp32", "bf16")
    assert f"| optimised | auto: {auto['precision']}" in engine_table([plain, auto])


def test_concurrent_workers_start_timing_together_after_all_are_ready():
    # The second worker renders a clip ten times longer before it is ready: a fixed delay would start
    # the first one alone; the barrier holds it until both are loaded.
    base = {"kind": "engine", "model": "rife", "width": 128, "height": 64, "clip": "mixed_static", "n_pass": 1,
            "variant": "optimised", "threads": 1, "precision": "fp32"}
    quick, slow = run_concurrently([{**base, "frames": 4}, {**base, "frames": 40}], 1)
    assert quick["frames_out"] < slow["frames_out"]
    assert abs(quick["wall_start"] - slow["wall_start"]) < 0.5


def test_a_worker_that_fails_before_it_is_ready_is_reported_not_waited_for():
    base = {"kind": "engine", "width": 128, "height": 64, "frames": 4, "clip": "mixed_static", "n_pass": 1,
            "variant": "optimised", "threads": 1, "precision": "fp32"}
    with pytest.raises(RuntimeError, match="benchmark worker failed"):
        run_concurrently([{**base, "model": "rife"}, {**base, "model": "no-such-model"}], 1)
