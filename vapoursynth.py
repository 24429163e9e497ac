"""VapourSynth: ``interpolate(clip, fps=60)`` interpolates a clip through the daemon (or in-process), as mpd-client.

::

    import vapoursynth as vs
    from multipassdedup.vapoursynth import interpolate

    clip = vs.core.bs.VideoSource("in.mkv")
    interpolate(clip, fps="60000/1001", model="rife").set_output()

Needs the ``vapoursynth`` package (Python 3.12 or newer); the base install runs it against a daemon, without
torch. See docs/vapoursynth.md.

The repository's root is the package, so a Python started there (``''`` on ``sys.path``) would find this file for
``import vapoursynth``: imported under that name, it loads VapourSynth's own module in its place.
"""

from __future__ import annotations

if __name__ == "vapoursynth":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _here = os.path.dirname(os.path.abspath(__file__))
    _spec = importlib.machinery.PathFinder.find_spec(
        "vapoursynth", [p for p in sys.path if os.path.abspath(p or os.curdir) != _here])
    if _spec is None or _spec.loader is None:
        raise ImportError("VapourSynth is not installed (pip install 'multipassdedup[vapoursynth]', Python 3.12+)")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["vapoursynth"] = _module  # what ``import vapoursynth`` returns once this file has run
    _spec.loader.exec_module(_module)
else:
    from .client.vapoursynth.filter import Error, interpolate

    __all__ = ["Error", "interpolate"]
