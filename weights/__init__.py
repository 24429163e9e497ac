"""Model weights: the manifest, fetching and verifying, and locating files for a model."""

from .errors import WeightsCorruptError, WeightsError, WeightsMissingError
from .manifest import Manifest
from .store import WeightStore, default_weights_dir

__all__ = ["Manifest", "WeightStore", "WeightsCorruptError", "WeightsError", "WeightsMissingError",
           "default_weights_dir"]
