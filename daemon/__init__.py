"""The gRPC daemon (``mpd-daemon``): sessions on a shared fair batching scheduler, auth, limits, health, metrics.

See docs/daemon.md.
"""
