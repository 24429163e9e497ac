"""The benchmarks take ``gimm``: without the user's files they write synthetic ones, run on them and say so."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from multipassdedup.bench import cadence
from multipassdedup.bench.speed import engine_table, engine_worker, weights_keys
from multipassdedup.bench.synthetic_weights import BenchWeights
from multipassdedup.core.models.registry import MODELS
from multipassdedup.weights import WeightStore


def test_speed_worker_runs_gimm_on_synthetic_weights_and_the_table_says_so(tmp_path: Path) -> None:
    notes: list[str] = []
    with BenchWeights(notes.append, WeightStore(tmp_path)) as weights:
        assert weights_keys("rife", weights) == {}  # served by the weight store (or failing there), never faked
        keys = weights_keys("gimm", weights)
        folder = Path(keys["weights_dir"])
        assert sorted(p.name for p in folder.iterdir()) == sorted(MODELS.get("gimm").weights.roles.values())
        assert weights_keys("gimm", weights) == keys and len(notes) == 1  # written and said once
        cfg = {"kind": "engine", "model": "gimm", "width": 64, "height": 64, "frames": 2, "clip": "mixed_static",
               "n_pass": 1, "variant": "optimised", "threads": 1, **keys}
        threads = torch.get_num_threads()
        try:
            row = {**cfg, **engine_worker(cfg)}
        finally:
            torch.set_num_threads(threads)
    assert not folder.exists()  # removed with the context
    assert "raft-things.pth" in notes[0] and "SYNTHETIC" in notes[0]
    assert row["frames_out"] == 7 and row["model_stats"]["model_calls"] > 0  # ceil(2 * 60 / 23.976) + 1
    straightforward = {**row, "variant": "straightforward"}
    assert "| gimm (synthetic weights) | 64x64 | optimised |" in engine_table([straightforward, row])


def test_speed_uses_the_users_files_when_present(tmp_path: Path) -> None:
    (tmp_path / "raft-things.pth").write_bytes(b"x")
    (tmp_path / "gimmvfi_r_arb_lpips.pt").write_bytes(b"x")
    notes: list[str] = []
    with BenchWeights(notes.append, WeightStore(tmp_path)) as weights:
        assert weights.folder_for("gimm") is None and not notes and weights.synthetic == []


def test_cadence_runs_gimm_and_its_report_says_synthetic(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MPD_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    out = tmp_path / "cadence.json"
    threads = torch.get_num_threads()
    try:
        assert cadence.main(["--models", "gimm", "--clips", "mixed_pan", "--frames", "3", "--methods", "plain",
                             "--size", "64x64", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    records = [r for r in json.loads(out.read_text())["results"] if r["method"] != cadence.IDEAL]
    assert records and all(r["model"] == "gimm" and r["synthetic_weights"] for r in records)
    assert records[0]["model_calls"] > 0
    captured = capsys.readouterr()
    assert "gimm ran on SYNTHETIC weights" in captured.out.replace("**", "")
    assert "SYNTHETIC" in captured.err
