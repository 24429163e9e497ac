"""Errors about weight files; each message names the file and the command that fixes it."""

FETCH_HINT = "run `mpd-weights fetch` (or set MPD_WEIGHTS_DIR to a directory that has it)"


class WeightsError(RuntimeError):
    """A weight file is missing, corrupt or could not be fetched."""


class WeightsMissingError(WeightsError, FileNotFoundError):
    """A weight file the model needs is not in the weights directory."""


class WeightsCorruptError(WeightsError):
    """A weight file does not have the sha256 the manifest records."""
