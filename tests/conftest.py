"""Fixtures any test can ask for: the models, loaded once per session, and a short-path work folder.

What the tests share besides fixtures (clips, PSNR, daemons, commands, waiting) is the package ``helpers``."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

MAX_WORKERS = 8  # the suite has a few dozen files; more workers only load more models


def cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one worker more than cores, as most tests wait on subprocesses,
    sockets and ffmpeg rather than compute; at most ``MAX_WORKERS``."""
    return min(cores() + 1, MAX_WORKERS)


# Under pytest-xdist each worker is a process of its own: torch's default (one thread per core in every
# worker) oversubscribes the cores, and OpenMP threads that spin-wait on a busy core run a model call ten
# times slower. Each worker takes its share of the cores instead; set before any test module imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // _WORKERS)))


@pytest.fixture(scope="session")
def rife():
    from multipassdedup.core import load_model

    return load_model("rife", device="cpu", precision="fp32")  # the exact mode the golden cases pin


@pytest.fixture(scope="session")
def gmfss():
    from multipassdedup.core import load_model

    return load_model("gmfss", device="cpu", precision="fp32")


@pytest.fixture
def work_dir():
    """A fresh folder outside pytest's tmp_path (short enough for unix socket paths), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="mpd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def signal_mask_kept():
    """Every test leaves the signal mask of pytest's main thread as it found it: subprocesses inherit blocked
    signals, and a client started later with SIGINT or SIGTERM blocked would ignore Ctrl-C and stop requests."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    after = signal.pthread_sigmask(signal.SIG_SETMASK, before)
    assert after == before, f"the test left signals blocked: {sorted(s.name for s in after - before)}"
