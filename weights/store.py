"""Locate and verify weight files in a weights directory; never downloads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .declaration import WeightFiles
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


@dataclass(frozen=True)
class FileStatus:
    """One weight file as ``mpd-weights`` reports it."""

    name: str
    state: str  # ok / missing / corrupt for a manifest file; present / missing for a user-supplied one
    users: tuple[str, ...]  # the models that load it
    fetched: bool = True  # whether ``mpd-weights fetch`` provides (and can repair) it: the manifest lists it
    source: str = ""  # where a user-supplied file comes from


@dataclass
class WeightStore:
    """A directory of weight files: the manifest's flat layout, or the original ``train_log_pg104/`` one."""

    root: Path = field(default_factory=default_weights_dir)
    manifest: Manifest = field(default_factory=Manifest.load)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        self._verified: set[Path] = set()

    def files_for(self, model: str, declared: WeightFiles) -> dict[str, Path]:
        """Role -> verified path of the files ``model`` declares; raises if a file is missing or corrupt."""
        flat = {role: self.root / name for role, name in declared.roles.items()}
        if all(p.is_file() for p in flat.values()):
            for p in flat.values():
                self.verify_file(p)
            return flat
        orig = self._original_layout(declared)
        if orig is not None:
            return orig
        missing = next(p for p in flat.values() if not p.is_file())
        raise WeightsMissingError(f"weight file {missing} for model {model!r} is missing; "
                                  f"{self._how_to_get(missing.name, declared)}")

    def _how_to_get(self, name: str, declared: WeightFiles) -> str:
        if name in self.manifest.files:
            return FETCH_HINT
        where = f" from {declared.source}" if declared.source else ""
        return f"mpd-weights does not download it: get it{where} and put it in {self.root}"

    def _original_layout(self, declared: WeightFiles) -> dict[str, Path] | None:
        """The original program's layout, user-supplied and so not checked against the manifest."""
        if not declared.original_names:
            return None
        bases = [self.root / declared.original_dir, self.root] if declared.original_dir else [self.root]
        for base in bases:
            found = {}
            for role, pattern in declared.original_names.items():
                matches = sorted(p for p in base.glob(pattern) if p.is_file())
                if not matches:
                    break
                found[role] = matches[0]
            else:
                return found
        return None

    def verify_file(self, path: Path) -> None:
        """Check ``path`` against its manifest sha256 (once per store); a file the manifest lacks is not checked."""
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

    def status(self, declared: Mapping[str, WeightFiles] | None = None) -> list[FileStatus]:
        """Every manifest file (ok/missing/corrupt), then every user-supplied file a model in ``declared``
        names (present/missing); each with the models of ``declared`` that load it."""
        declared = declared or {}

        def users(name: str) -> tuple[str, ...]:
            return tuple(sorted(m for m, files in declared.items() if name in files.roles.values()))

        rows = []
        for name, expected in sorted(self.manifest.files.items()):
            path = self.root / name
            if not path.is_file():
                state = "missing"
            else:
                state = "ok" if sha256_of(path) == expected else "corrupt"
            rows.append(FileStatus(name, state, users(name)))
        supplied = {name: files.source for files in declared.values() for name in files.roles.values()
                    if name not in self.manifest.files}
        for name, source in sorted(supplied.items()):
            state = "present" if (self.root / name).is_file() else "missing"
            rows.append(FileStatus(name, state, users(name), fetched=False, source=source))
        return rows
