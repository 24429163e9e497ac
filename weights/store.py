"""Locate and verify weight files in a weights directory; never downloads."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FETCH_HINT, WeightsCorruptError, WeightsMissingError
from .manifest import Manifest

ENV_VAR = "MPD_WEIGHTS_DIR"


def default_weights_dir() -> Path:
    """``$MPD_WEIGHTS_DIR``, else ``$XDG_DATA_HOME/multipassdedup/weights`` (``~/.local/share/...``)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "multipassdedup" / "weights"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class WeightStore:
    """A directory of weight files: the manifest's flat layout, or the original ``train_log_pg104/`` one."""

    root: Path = field(default_factory=default_weights_dir)
    manifest: Manifest = field(default_factory=Manifest.load)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        self._verified: set[Path] = set()

    def files_for(self, model: str) -> dict[str, Path]:
        """Role -> verified path for ``model``; raises if a file is missing or corrupt."""
        if model not in self.manifest.models:
            raise KeyError(f"unknown model {model!r}; known: {', '.join(self.manifest.model_names())}")
        roles = self.manifest.models[model]
        flat = {role: self.root / name for role, name in roles.items()}
        if all(p.is_file() for p in flat.values()):
            for p in flat.values():
                self.verify_file(p)
            return flat
        orig = self._original_layout(model)
        if orig is not None:
            return orig
        missing = next(p for p in flat.values() if not p.is_file())
        raise WeightsMissingError(f"weight file {missing} for model {model!r} is missing; {FETCH_HINT}")

    def _original_layout(self, model: str) -> dict[str, Path] | None:
        """The original program's layout, user-supplied and so not checked against the manifest."""
        roles = self.manifest.original_models.get(model)
        candidates = [self.root / self.manifest.original_dir, self.root]
        for base in candidates:
            if roles is not None:
                paths = {role: base / name for role, name in roles.items()}
                if all(p.is_file() for p in paths.values()):
                    return paths
            if model == "rife":
                found = sorted(base.glob("rife*.pkl"))
                if found:
                    return {"ifnet": found[0]}
        return None

    def verify_file(self, path: Path) -> None:
        """Check ``path`` against its manifest sha256 (once per store)."""
        if path in self._verified:
            return
        expected = self.manifest.files.get(path.name)
        if expected is None:
            return
        actual = sha256_of(path)
        if actual != expected:
            raise WeightsCorruptError(
                f"weight file {path} is corrupt (sha256 {actual[:12]}..., expected {expected[:12]}...); "
                f"run `mpd-weights fetch --force` to download it again"
            )
        self._verified.add(path)

    def status(self) -> list[tuple[str, str, list[str]]]:
        """(file name, state, models using it) for every manifest file; state is ok/missing/corrupt."""
        rows = []
        for name, expected in sorted(self.manifest.files.items()):
            path = self.root / name
            users = sorted(m for m, roles in self.manifest.models.items() if name in roles.values())
            if not path.is_file():
                state = "missing"
            else:
                state = "ok" if sha256_of(path) == expected else "corrupt"
            rows.append((name, state, users))
        return rows
