"""Model weights: the manifest, fetching and verifying, locating a model's declared files, reading checkpoints.

Importable without torch: only ``load_state_dict`` needs it, and imports it when called.
"""

from .checkpoint import load_state_dict
from .declaration import ORIGINAL_LAYOUT_DIR, WeightFiles
from .errors import WeightsCorruptError, WeightsError, WeightsMissingError
from .manifest import Manifest
from .store import FileStatus, WeightStore, default_weights_dir

__all__ = ["ORIGINAL_LAYOUT_DIR", "FileStatus", "Manifest", "WeightFiles", "WeightStore", "WeightsCorruptError",
           "WeightsError", "WeightsMissingError", "default_weights_dir", "load_state_dict"]
