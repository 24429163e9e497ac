"""The engine: models, scene detection, timestamp mapping and the MultiPassDedup pipeline. No I/O."""

from ..settings import EngineSettings, SettingsError, to_fraction
from .interpolator import CallStats, Interpolator, ModelFrame, PairRequest
from .models import UnknownModelError, available_models, load_model, resolve_device
from .pipeline import MultiPassDedup, PipelineStats
from .scene import SceneDetector
from .timestamps import TimestampMapper, auto_passes

__all__ = ["CallStats", "EngineSettings", "Interpolator", "ModelFrame", "MultiPassDedup", "PairRequest",
           "PipelineStats", "SceneDetector", "SettingsError", "TimestampMapper", "UnknownModelError", "auto_passes",
           "available_models", "load_model", "resolve_device", "to_fraction"]
