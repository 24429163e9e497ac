"""The old module path of ``mpd-watch``, kept for installed systemd units and scripts that run
``python -m multipassdedup.client.watch_main``: the watcher itself lives in ``client/watch/``.

A package rather than a ``watch_main.py`` module, so that git sees ``client/watch_main.py`` as moved
to ``client/watch/main.py`` (and carries changes made to it there).
"""

from ..watch.main import main

__all__ = ["main"]
