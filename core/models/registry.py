"""The model registry: each model module registers its adapter and weight files; ``load_model`` builds by name.

Registration works the way timm's ``register_model`` does: a model module decorates its ``Interpolator``
subclass with ``@register_model(WeightFiles(...))`` and is imported by ``core.models`` so the decorator runs.
This module imports no model, so there is no cycle between the registry and the models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from ...weights import WeightFiles, WeightStore
from .base import Interpolator

log = logging.getLogger(__name__)

InterpolatorClass = TypeVar("InterpolatorClass", bound=type[Interpolator])


class UnknownModelError(ValueError):
    """The requested model name is not one this engine provides."""


@dataclass(frozen=True)
class RegisteredModel:
    """A model ``load_model`` can build: its adapter class (built with ``from_files``) and the files it loads."""

    name: str
    adapter: type[Interpolator]
    weights: WeightFiles


class ModelRegistry:
    """Model name -> ``RegisteredModel``; names are unique."""

    def __init__(self) -> None:
        self._models: dict[str, RegisteredModel] = {}

    def register(self, weights: WeightFiles) -> Callable[[InterpolatorClass], InterpolatorClass]:
        """Class decorator: register an ``Interpolator`` subclass under its ``name``, loading ``weights``."""

        def add(adapter: InterpolatorClass) -> InterpolatorClass:
            if not adapter.name:
                raise ValueError(f"{adapter.__name__} has no model name to register under")
            if adapter.name in self._models:
                raise ValueError(f"model {adapter.name!r} is already registered "
                                 f"(by {self._models[adapter.name].adapter.__name__})")
            self._models[adapter.name] = RegisteredModel(adapter.name, adapter, weights)
            return adapter

        return add

    def get(self, name: str) -> RegisteredModel:
        if name not in self._models:
            raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(self.names())}")
        return self._models[name]

    def names(self) -> list[str]:
        return sorted(self._models)


# The one registry of this engine, filled as ``core.models`` imports each model module.
MODELS = ModelRegistry()
register_model = MODELS.register


def available_models() -> list[str]:
    return MODELS.names()


def declared_weights() -> dict[str, WeightFiles]:
    """Model name -> the weight files it loads, for every registered model."""
    return {name: MODELS.get(name).weights for name in MODELS.names()}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present; a CUDA request on a machine without it falls back to the CPU."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA requested but not available; running on the CPU")
        return torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    return dev


def load_model(name: str, device: str | torch.device = "cpu", weights_dir: str | Path | None = None,
               half: bool = False) -> Interpolator:
    """Load a registered model (``available_models()``) with the default weights (or those in ``weights_dir``).

    ``half`` (fp16) is honoured on CUDA only; the CPU always runs fp32.
    """
    model = MODELS.get(name)
    dev = resolve_device(device)
    dtype = torch.float16 if (half and dev.type == "cuda") else torch.float32
    if half and dev.type != "cuda":
        log.warning("fp16 requested on %s; using fp32", dev)
    store = WeightStore(Path(weights_dir)) if weights_dir is not None else WeightStore()
    files = store.files_for(name, model.weights)
    return model.adapter.from_files(files, dev, dtype)
