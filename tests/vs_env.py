"""The VapourSynth filter's test environment: ``.venv-vs/``, Python 3.12 or newer with the base install (no torch),
the ``vapoursynth`` extra (VapourSynth's wheel, which brings ``vspipe``) and BestSource (a source filter from PyPI,
for the example script).

VapourSynth's wheels need Python 3.12 or newer, newer than the project's main environment may be: the interpreter
is ``$MPD_VS_PYTHON`` when set, else the first ``python3.1x`` (x >= 2) found on PATH or under pyenv. Run as a
script (setup.sh does) it creates or updates the environment and prints its interpreter; a repeat run that finds
it complete only checks it. ``find_python`` raises ``MissingPython`` saying what was looked for.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-vs"
MINIMUM = (3, 12)
EXTRA_PACKAGES = ("vapoursynth-bestsource",)  # the example script's source filter
# What a complete environment imports: VapourSynth, BestSource, this repository's package (not a copy), no torch.
CHECK = ("import importlib.util, sys, vapoursynth as vs, multipassdedup.vapoursynth as m\n"
         "assert hasattr(vs.core, 'bs'), 'BestSource is missing'\n"
         "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
         "print(m.__file__)\n")


class MissingPython(RuntimeError):
    """No Python 3.12 or newer to run VapourSynth's wheels with."""


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def find_python() -> str:
    """An interpreter of Python 3.12 or newer (see the module's docstring); MissingPython when there is none."""
    tried = []
    candidates = [os.environ["MPD_VS_PYTHON"]] if os.environ.get("MPD_VS_PYTHON") else []
    candidates += [p for minor in range(20, MINIMUM[1] - 1, -1) if (p := shutil.which(f"python3.{minor}"))]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(glob.glob(str(pyenv / "3.*" / "bin" / "python3")), reverse=True)
    for python in candidates:
        version = _version(python)
        tried.append(f"{python} ({'.'.join(map(str, version)) if version else 'does not run'})")
        if version is not None and version >= MINIMUM:
            return python
    raise MissingPython("VapourSynth's wheels need Python 3.12 or newer and none was found (set MPD_VS_PYTHON, or "
                        f"put python3.12 on PATH); tried: {', '.join(tried) or 'nothing on PATH or under pyenv'}")


def complete() -> bool:
    """Whether ``.venv-vs`` imports everything the tests need from this repository."""
    python = VENV / "bin" / "python"
    if not python.exists():
        return False
    out = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, cwd="/", timeout=120)
    return out.returncode == 0 and Path(out.stdout.strip()).resolve() == (REPO / "vapoursynth.py").resolve()


def ensure() -> Path:
    """``.venv-vs``'s interpreter, the environment created or completed first when it needs it."""
    python = VENV / "bin" / "python"
    if complete():
        return python
    if not python.exists() or (_version(str(python)) or (0, 0)) < MINIMUM:
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([find_python(), "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet", "install"]
    subprocess.run(pip + ["-e", f"{REPO}[vapoursynth]", *EXTRA_PACKAGES], check=True)
    if not complete():
        raise RuntimeError(f"{VENV} was set up but does not import vapoursynth, BestSource and this repository")
    return python


if __name__ == "__main__":
    try:
        print(ensure())
    except MissingPython as e:
        sys.exit(f"setup: {e}")
