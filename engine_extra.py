"""The ``engine`` extra: whether this install has it, and the commands that cannot run without it.

The base install is the thin clients and the protocol (``mpd-client``, ``mpd-watch``, ``mpd-weights``);
``pip install multipassdedup[engine]`` adds torch and so everything that runs a model: the daemon, the
in-process engine, ``mpd-demo``, the benchmarks. Nothing here imports torch: the check looks it up.
"""

from __future__ import annotations

import importlib.util
import sys

ENGINE_EXTRA = "multipassdedup[engine]"
#: sysexits' EX_UNAVAILABLE, as mpd-client uses it for "no daemon and no engine".
EXIT_UNAVAILABLE = 69


def engine_installed() -> bool:
    """True when torch can be imported here (the ``engine`` extra is installed), found without importing it."""
    return importlib.util.find_spec("torch") is not None


def require_engine(command: str) -> None:
    """Exit 69 with one line on stderr when ``command`` needs the engine and this install lacks it."""
    if not engine_installed():
        print(f"{command}: error: this install has no engine (torch is not installed): install {ENGINE_EXTRA}; "
              "a thin install runs mpd-client and mpd-watch against a daemon (--server ADDR)", file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)


def daemon_command() -> int:
    """The ``mpd-daemon`` console script: the engine's check, then the daemon."""
    require_engine("mpd-daemon")
    from .daemon.main import main

    return main()


def demo_command() -> int:
    """The ``mpd-demo`` console script: it runs the engine in-process."""
    require_engine("mpd-demo")
    from .client.demo import main

    return main()
