"""The gRPC daemon (``mpd-daemon``): sessions on a shared fair batching scheduler, auth, limits, health, metrics (docs/daemon.md)."""
