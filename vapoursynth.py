"""VapourSynth: ``interpolate(clip, fps=60)`` interpolates a clip through the daemon (or in-process), as mpd-client.

::

    import vapoursynth as vs
    from multipassdedup.vapoursynth import interpolate

    clip = vs.core.bs.VideoSource("in.mkv")
    interpolate(clip, fps="60000/1001", model="rife").set_output()

Needs the ``vapoursynth`` package (Python 3.12 or newer); the base install runs it against a daemon, without
torch. See docs/vapoursynth.md.
"""

from .client.vapoursynth.filter import Error, interpolate

__all__ = ["Error", "interpolate"]
