"""The model adapters: networks behind the ``Interpolator`` interface, and the registry ``load_model`` reads.

Importing this package imports every model module, which is what registers them.
"""

from . import gimm, gmfss, rife  # noqa: F401 - registers the models
from .base import CallStats, Interpolator, ModelFrame, PairInterpolator, PairRequest
from .registry import (
                       UnknownModelError,
                       available_models,
                       first_supported,
                       load_model,
                       precision_variants,
                       resolve_device,
)

__all__ = ["CallStats", "Interpolator", "ModelFrame", "PairInterpolator", "PairRequest", "UnknownModelError",
           "available_models", "first_supported", "load_model", "precision_variants", "resolve_device"]
