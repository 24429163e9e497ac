"""bench/gpu.py off a GPU: one line and exit 0; its random-weights fallback; no PyAV/watchdog on its path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multipassdedup.bench.gpu import weights_for
from multipassdedup.core import load_model

ROOT = Path(__file__).resolve().parents[1]
# The GPU machine has python3, torch, cupy, grpcio and numpy only: these must not be imported on the way.
BLOCKED = "import sys\nfor m in ('av', 'watchdog', 'imageio_ffmpeg', 'matplotlib'): sys.modules[m] = None\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the check runs for real")
@pytest.mark.parametrize("how", ["module", "file"])
def test_without_cuda_it_says_so_in_one_line_and_exits_0(how: str, tmp_path: Path) -> None:
    run = ("import runpy; runpy.run_module('multipassdedup.bench.gpu', run_name='__main__')" if how == "module" else
           f"import runpy; sys.argv = ['gpu.py']; runpy.run_path({str(ROOT / 'bench' / 'gpu.py')!r}, "
           "run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", BLOCKED + run], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().count("\n") == 0 and "no CUDA device" in done.stdout
    assert not (tmp_path / "bench").exists()  # nothing written


def test_absent_weight_files_become_random_weights_of_the_real_architecture(tmp_path: Path) -> None:
    folder, real = weights_for("rife", tmp_path / "empty", tmp_path / "scratch")
    assert not real and folder == tmp_path / "scratch"
    model = load_model("rife", weights_dir=folder)
    x = torch.rand(1, 3, 64, 64)
    out = model.interpolate_tensors(x, x, [0.5])[0]
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the check runs for real")
def test_a_rehearsal_runs_the_parts_on_the_cpu_and_writes_what_they_found(tmp_path: Path) -> None:
    # The speed part at the rehearsal's size (the golden cases are the golden tests' work, the daemon part slow).
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-c", BLOCKED + "import sys; from multipassdedup.bench.gpu import main; "
                           f"sys.exit(main(['--rehearse', '--models', 'rife', '--skip', 'golden,gimm,daemon', "
                           f"'--out', {str(out)!r}]))"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["rehearsal"] and data["errors"] == {} and set(data["seconds"]) == {"cross_device", "splatting",
                                                                                    "speed"}
    speed = {(r["precision"], r["batch"]): r for r in data["speed"]}
    assert set(speed) == {(p, b) for p in ("fp32", "bf16") for b in (1, 2)}
    assert len({r["frames_out"] for r in speed.values()}) == 1 and all(r["fps"] > 0 for r in speed.values())
    assert data["splatting"] == [{"skipped": "the cupy kernel runs on CUDA only"}]
    assert "| rife | 256x128 | bf16 | 1 | 2 |" in done.stdout


def test_an_unknown_part_to_skip_is_named() -> None:
    done = subprocess.run([sys.executable, "-m", "multipassdedup.bench.gpu", "--skip", "golden,spead"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown part(s) spead" in done.stderr
