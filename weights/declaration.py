"""What a model declares about its weight files. Plain data, no torch: the weights tools read it without a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ORIGINAL_LAYOUT_DIR = "train_log_pg104"  # where the reference program kept its weights


@dataclass(frozen=True)
class WeightFiles:
    """The weight files one model loads, by role, and the other places they may be found.

    ``roles`` maps each role to a file in the weights directory. A file the manifest lists is fetched by
    ``mpd-weights fetch`` and checked against its sha256; any other file is supplied by the user, and
    ``source`` says where it comes from (shown by ``mpd-weights list`` and in the missing-file error).

    ``original_names`` maps each role to its name in the original program's layout, found in
    ``original_dir`` or in the weights directory itself; a name may be a glob (the first match in sorted
    order is taken). Files found that way are the user's and are not checked against the manifest.
    """

    roles: Mapping[str, str]
    original_dir: str = ""
    original_names: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.roles:
            raise ValueError("a model declares at least one weight file")
        if self.original_names and set(self.original_names) != set(self.roles):
            raise ValueError(f"original_names must name the roles {sorted(self.roles)}, "
                             f"got {sorted(self.original_names)}")
