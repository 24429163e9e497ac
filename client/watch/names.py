"""Which names in a drop folder are unfinished uploads or hidden files, and so never taken."""

from __future__ import annotations

import re

# Suffixes that uploaders, browsers and sync tools use while a file is still being written.
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", ".download", ".!qb",
                      ".opdownload")

# Syncthing writes `.syncthing.NAME.tmp` (hidden) or `~syncthing~NAME.tmp` (Windows-style) until done.
_SYNCTHING_TEMP = re.compile(r"^(\.syncthing\..*|~syncthing~.*)\.tmp$", re.IGNORECASE)


def is_temporary_name(name: str) -> bool:
    """True for names left alone until renamed: temp suffixes, sync-tool temps, lock files, dot-files."""
    if not name or name.startswith((".", "~$")):
        return True
    if _SYNCTHING_TEMP.match(name):
        return True
    lowered = name.lower()
    return lowered.endswith(TEMPORARY_SUFFIXES)
