"""The daemon protocol: ``mpd.proto`` and its generated modules (regenerate: ``python -m multipassdedup.proto.generate``)."""
