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
from ..precision import CpuInfo, check_precision, resolve_precision
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
               half: bool = False, precision: str = "fp32", cpu: CpuInfo | None = None) -> Interpolator:
    """Load a registered model (``available_models()``) with the default weights (or those in ``weights_dir``).

    ``precision`` (auto, fp32, bf16, fp16; see ``core.precision``) is the arithmetic of its network calls;
    weights stay fp32. ``half=True`` is the older spelling of ``precision="fp16"``. fp16 runs on CUDA only
    (fp32 elsewhere, with a warning); a model raises ValueError for a precision it was not measured in.
    The choice and its reason are logged once. ``cpu``: the CPU ``auto`` decides for (default: this machine's).
    """
    requested = check_precision(precision)
    if half and requested not in ("fp32", "fp16"):
        raise ValueError(f"half=True asks for fp16, but precision={precision!r} was given too")
    requested = "fp16" if half else requested
    model = MODELS.get(name)
    dev = resolve_device(device)
    choice = resolve_precision(requested, dev, model.adapter.precisions, model.adapter.auto_cpu_bf16, name, cpu)
    store = WeightStore(Path(weights_dir)) if weights_dir is not None else WeightStore()
    files = store.files_for(name, model.weights)
    loaded = model.adapter.from_files(files, dev, torch.float32)
    loaded.set_precision(choice)
    warn = requested != "auto" and choice.precision != requested
    (log.warning if warn else log.info)("%s on %s: precision %s (%s)%s", name, dev, choice.precision, choice.reason,
                                        ", channels-last" if loaded.channels_last else "")
    return loaded


def precision_variants(model: Interpolator, requested: list[str],
                       cpu: CpuInfo | None = None) -> dict[str, Interpolator]:
    """``model`` in each of the ``requested`` precisions it runs in, by resolved precision, first the model's own.

    The variants share the model's networks (weights are fp32 in every precision); a requested precision the
    model was not measured in is left out with a warning. What the daemon serves.
    """
    variants = {model.precision: model}
    for text in requested:
        if text != "auto" and check_precision(text) not in model.precisions:
            log.warning("%s: precision %s left out: it runs in %s only", model.name, text, "/".join(model.precisions))
            continue
        choice = resolve_precision(text, model.device, model.precisions, model.auto_cpu_bf16, model.name, cpu)
        if text != "auto" and choice.precision != text:  # fp16 on a CPU, bf16 on a GPU without it
            log.warning("%s: precision %s left out (%s): sessions asking for it are refused", model.name, text,
                        choice.reason)
        if choice.precision not in variants:
            variants[choice.precision] = model.with_precision(choice)
    return variants


def first_supported(name: str, requested: list[str]) -> str:
    """The first of ``requested`` (auto, fp32, ...) that model ``name`` runs in; ValueError when none is."""
    supported = MODELS.get(name).adapter.precisions
    for text in requested:
        if text == "auto" or check_precision(text) in supported:
            return text
    raise ValueError(f"{name} runs in {'/'.join(supported)} only, not in {', '.join(requested)}")
