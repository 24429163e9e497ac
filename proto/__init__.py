"""The daemon protocol: ``mpd.proto`` and its generated modules.

Regenerate them with ``python -m multipassdedup.proto.generate``.
"""
