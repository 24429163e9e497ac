"""setup.sh's torch step: TORCH_SPEC with pip options (a GPU build's index), a set spec replacing the torch a venv
has, and a line saying which build is there. The wheels come from a local find-links folder: no network."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import venv
import zipfile
from pathlib import Path

import pip
import pytest

REPO = Path(__file__).resolve().parent.parent


def fake_torch_wheel(folder: Path, version: str, cuda: str | None) -> Path:
    """A wheel named torch that says its version and CUDA build, as torch does (``torch.version.cuda``)."""
    files = {
        "torch/__init__.py": f"__version__ = {version!r}\nfrom . import version\n",
        "torch/version.py": f"cuda = {cuda!r}\nhip = None\n",
        f"torch-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"torch-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            "Tag: py3-none-any\n",
    }
    record = f"torch-{version}.dist-info/RECORD"
    lines = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(text.encode())}")
    files[record] = "\n".join(lines + [f"{record},,"]) + "\n"
    path = folder / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def install_torch(python: Path, torch_spec: str | None) -> subprocess.CompletedProcess:
    """setup.sh's ``install_torch`` on ``python``'s environment, with TORCH_SPEC set (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_SPEC"}
    if torch_spec is not None:
        env["TORCH_SPEC"] = torch_spec
    return subprocess.run(["bash", "-c", 'source "$1" && install_torch "$2"', "bash", str(REPO / "setup.sh"),
                           str(python)], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    fake_torch_wheel(folder, "2.13.0", None)
    fake_torch_wheel(folder, "2.13.1", "12.6")  # standing in for a CUDA build from another index
    return folder


def test_torch_spec_takes_pip_options_and_replaces_the_installed_torch(tmp_path: Path, wheels: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    # pip alone from this interpreter (ensurepip takes longer than the test), nothing else of its packages
    pip_only = tmp_path / "pip-only"
    pip_only.mkdir()
    (pip_only / "pip").symlink_to(Path(pip.__file__).parent)
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "pip-only.pth").write_text(f"{pip_only}\n")
    local = f"--no-index --find-links {wheels}"
    # The requirement and its options reached pip as one word before ("Invalid requirement").
    first = install_torch(python, f"torch==2.13.0 {local}")
    assert first.returncode == 0, first.stderr
    assert f"setup: installing torch==2.13.0 {local}" in first.stdout
    assert first.stdout.strip().endswith("setup: torch 2.13.0, a CPU-only build")
    # A set TORCH_SPEC on a venv that has torch is installed, not skipped without a word.
    cuda = install_torch(python, f"torch==2.13.1 {local}")
    assert cuda.returncode == 0, cuda.stderr
    assert cuda.stdout.strip().endswith("setup: torch 2.13.1, a CUDA 12.6 build")
    # Without TORCH_SPEC the venv keeps its torch, and says which.
    kept = install_torch(python, None)
    assert kept.returncode == 0, kept.stderr
    assert "setup: keeping the torch installed in" in kept.stdout and "set TORCH_SPEC for another build" in kept.stdout
    assert kept.stdout.strip().endswith("setup: torch 2.13.1, a CUDA 12.6 build")
    # A spec pip cannot meet fails the step, with pip's reason.
    missing = install_torch(python, f"torch==9.9 {local}")
    assert missing.returncode != 0 and "torch==9.9" in missing.stderr
