"""The ``engine`` extra: whether this install has it.

The base install is the thin clients and the protocol (``mpd-client``, ``mpd-watch``, ``mpd-weights``);
``pip install multipassdedup[engine]`` adds torch and so everything that runs a model: the daemon, the
in-process engine, ``mpd-demo``, the benchmarks. Nothing here imports torch: the check looks it up.
The commands that need the engine check it in ``commands.py``.
"""

from __future__ import annotations

import importlib.util

ENGINE_EXTRA = "multipassdedup[engine]"


def engine_installed() -> bool:
    """True when torch can be imported here (the ``engine`` extra is installed), found without importing it."""
    return importlib.util.find_spec("torch") is not None
