"""The engine: models, scene detection, timestamp mapping and the MultiPassDedup pipeline. No I/O."""

from .interpolator import CallStats, Interpolator, ModelFrame, PairRequest
from .models import UnknownModelError, available_models, load_model, resolve_device

__all__ = ["CallStats", "Interpolator", "ModelFrame", "PairRequest", "UnknownModelError", "available_models",
           "load_model", "resolve_device"]
