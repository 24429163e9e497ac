"""MultiPassDedup: frame interpolation for anime drawn on twos and threes.

Layers: ``core`` (engine, no I/O), ``weights`` (fetch/verify/locate model files),
``proto`` (gRPC schema), ``daemon`` (the server), ``client`` (mpd-client, mpd-watch).
"""

__version__ = "0.1.0"
