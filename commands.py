"""The console scripts that join the layers: ``mpd-daemon``, ``mpd-demo`` and ``mpd-weights``.

Each layer keeps its own command-line code (``daemon.main``, ``client.demo``, ``weights.cli``); what
lives here is what crosses layers: the engine's check before a command that needs torch, and the
engine's model registry handed to ``mpd-weights`` (the ``weights`` package imports nothing of the
engine). Everything is imported when the command runs, so importing this module costs nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .engine_extra import ENGINE_EXTRA, engine_installed
from .weights import WeightFiles

#: sysexits' EX_UNAVAILABLE, as mpd-client uses it for "no daemon and no engine".
EXIT_UNAVAILABLE = 69


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


class RegisteredModels:
    """The engine's model registry as ``mpd-weights`` asks it (``weights.cli.ModelCatalogue``)."""

    def declared_weights(self) -> dict[str, WeightFiles]:
        from .core.models.registry import declared_weights

        return declared_weights()

    def load(self, model: str, weights_dir: Path) -> None:
        from .core.models.registry import load_model

        load_model(model, device="cpu", weights_dir=weights_dir)


def weights_command(argv: list[str] | None = None) -> int:
    """The ``mpd-weights`` console script: with the engine installed, it names and checks the models' files."""
    from .weights.cli import main

    return main(argv, RegisteredModels() if engine_installed() else None)


if __name__ == "__main__":  # python -m multipassdedup.commands mpd-weights|mpd-daemon|mpd-demo ARGS
    name, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    sys.exit({"mpd-weights": weights_command, "mpd-daemon": daemon_command, "mpd-demo": demo_command}[name]())
