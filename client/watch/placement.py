"""Where a folder's jobs run, checked once at start: on a thin install (no engine) a folder whose jobs could
run nowhere is refused in one line, instead of every job failing and being retried forever."""

from __future__ import annotations

import os

from ...engine_extra import ENGINE_EXTRA, engine_installed
from ...settings import SettingsError
from ..engine_flags import settings_from_options
from ..placement import Placement, choose_daemon, probes_from_environment
from .config import FolderConfig, WatchConfig, default_client_command


def nowhere_to_run(config: WatchConfig) -> str | None:
    """Why a folder's jobs could run nowhere (the engine is not installed and the folder has no daemon to
    use: mpd-watch refuses to start, exit 69), None when every folder has somewhere.

    Only folders run by this install's own mpd-client are checked (a ``client_command`` of another install
    decides for itself); a folder with a server (or ``$MPD_SERVER``) is left to its jobs, which retry a daemon
    that is down; a folder on the automatic choice needs a daemon that takes its model now.
    """
    if engine_installed():
        return None
    for folder in config.folders:
        if tuple(folder.client_command) != default_client_command():
            continue
        problem = _nowhere(folder)
        if problem is not None:
            return problem
    return None


def _nowhere(folder: FolderConfig) -> str | None:
    if folder.local:
        return (f"{folder.in_dir}: local runs the engine in-process, and it is not installed: install "
                f"{ENGINE_EXTRA}, or give the folder a server")
    if folder.server or os.environ.get("MPD_SERVER"):
        return None
    try:
        model = settings_from_options(folder.engine_options()).model
    except SettingsError:
        return None  # validate() reports it
    placement = Placement(token=os.environ.get("MPD_TOKEN") or None, probes=probes_from_environment())
    choice = choose_daemon(placement, model)
    if choice.address is not None:
        return None
    why = "; ".join(choice.passed_over) or f"no daemon answered at {' or '.join(placement.probes) or 'any address'}"
    return (f"{why}, and the engine is not installed to run in-process: give --server ADDR (server in a config "
            f"file), or install {ENGINE_EXTRA}")
