"""``mpd-watch``, the drop-folder application: watches folders, claims settled files, runs mpd-client on each
as a separate process and keeps a SQLite journal of the jobs (docs/watch.md).

It imports nothing else from ``client/`` but the exit-code contract (``client/errors.py``) and
nothing from ``daemon/`` or ``core/``: it talks to the daemon only through mpd-client.
"""
