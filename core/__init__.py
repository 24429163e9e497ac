"""The engine: models, scene detection, timestamp mapping and the MultiPassDedup pipeline. No I/O."""

from .models import (CallStats, Interpolator, ModelFrame, PairInterpolator, PairRequest, UnknownModelError,
                     available_models, load_model, resolve_device)
from .pipeline import MultiPassDedup, PipelineStats, SceneDetector, TimestampMapper, auto_passes, to_fraction

__all__ = ["CallStats", "Interpolator", "ModelFrame", "MultiPassDedup", "PairInterpolator", "PairRequest",
           "PipelineStats", "SceneDetector", "TimestampMapper", "UnknownModelError", "auto_passes",
           "available_models", "load_model", "resolve_device", "to_fraction"]
