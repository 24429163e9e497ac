"""The streaming pipeline: MultiPassDedup, with scene-cut detection and the output timestamp mapping."""

from .multipass import MultiPassDedup, PipelineStats
from .scene import SceneDetector
from .timestamps import TimestampMapper, auto_passes

__all__ = ["MultiPassDedup", "PipelineStats", "SceneDetector", "TimestampMapper", "auto_passes"]
