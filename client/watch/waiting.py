"""The files a running watcher waits for (settling, open for writing, settled but no free slot), for `mpd-watch status`.

They are not jobs yet (a file becomes one when it is claimed), so the journal does not hold them;
the watcher writes them to ``waiting.json`` in its state directory whenever the list changes, and
``mpd-watch status`` shows them while that watcher runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

WAITING_FILE = "waiting.json"


@dataclass(frozen=True)
class WaitingFile:
    """A candidate file of a drop folder and what it waits for: "settling", "open for writing" or "settled"."""

    folder: str
    name: str
    state: str


def write_waiting(state_dir: Path, files: list[WaitingFile]) -> None:
    """Replace the state directory's list (atomically: a reader sees the old list or the new one)."""
    path = Path(state_dir) / WAITING_FILE
    temp = path.with_name(f".{WAITING_FILE}.{os.getpid()}.tmp")
    temp.write_text(json.dumps({"pid": os.getpid(), "files": [asdict(f) for f in files]}))
    os.replace(temp, path)


def read_waiting(state_dir: Path) -> list[WaitingFile] | None:
    """The list of the watcher running on ``state_dir``; None when none runs (or it never wrote one)."""
    try:
        data = json.loads((Path(state_dir) / WAITING_FILE).read_text())
        pid = int(data["pid"])
        os.kill(pid, 0)
        return [WaitingFile(str(f["folder"]), str(f["name"]), str(f["state"])) for f in data["files"]]
    except (OSError, ValueError, KeyError, TypeError):  # no file, a watcher gone (ProcessLookupError), garbage
        return None


def clear_waiting(state_dir: Path) -> None:
    """Remove the list (the watcher stops: nothing waits on it any more)."""
    (Path(state_dir) / WAITING_FILE).unlink(missing_ok=True)
