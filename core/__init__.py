"""The engine: models, scene detection, timestamp mapping and the MultiPassDedup pipeline. No I/O."""

from .interpolator import CallStats, Interpolator, ModelFrame, PairRequest
from .models import UnknownModelError, available_models, load_model, resolve_device
from .pipeline import MultiPassDedup, PipelineStats
from .scene import SceneDetector
from .timestamps import TimestampMapper, auto_passes, to_fraction

__all__ = ["CallStats", "Interpolator", "ModelFrame", "MultiPassDedup", "PairRequest", "PipelineStats",
           "SceneDetector", "TimestampMapper", "UnknownModelError", "auto_passes", "available_models",
           "load_model", "resolve_device", "to_fraction"]
