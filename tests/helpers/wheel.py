"""The project's wheel, built from this checkout.

pip builds a local project in its source tree (``build/``, ``*.egg-info``), so two test processes building at
once (pytest-xdist workers) would write the same folders: builds take turns under a lock file."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def build_wheel(dist: Path) -> Path:
    """Build the wheel into ``dist`` (no dependencies, no build isolation) and return its path."""
    lock_path = REPO / "build" / ".wheel.lock"
    lock_path.parent.mkdir(exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(dist), str(REPO)], check=True, capture_output=True)
    (wheel,) = dist.glob("multipassdedup-*.whl")
    return wheel
