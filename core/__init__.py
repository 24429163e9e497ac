"""The engine: models, scene detection, timestamp mapping and the MultiPassDedup pipeline. No I/O."""

from ..settings import EngineSettings, SettingsError, to_fraction
from .models import (
                     CallStats,
                     Interpolator,
                     ModelFrame,
                     PairInterpolator,
                     PairRequest,
                     UnknownModelError,
                     available_models,
                     first_supported,
                     load_model,
                     precision_variants,
                     resolve_device,
)
from .pipeline import MultiPassDedup, PipelineStats, SceneDetector, TimestampMapper, auto_passes

__all__ = ["CallStats", "EngineSettings", "Interpolator", "ModelFrame", "MultiPassDedup", "PairInterpolator",
           "PairRequest", "PipelineStats", "SceneDetector", "SettingsError", "TimestampMapper", "UnknownModelError",
           "auto_passes",
           "available_models", "first_supported", "load_model", "precision_variants", "resolve_device",
           "to_fraction"]
