"""The VapourSynth filter (``multipassdedup.vapoursynth.interpolate``): a clip interpolated by a daemon.

``formats``: a clip's planes <-> the engine's RGB, as the pipe converts them; ``access``: output frames in any
order from streaming sessions, the same frames whatever the order; ``filter``: the VapourSynth glue.
"""
