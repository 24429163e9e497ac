"""The VapourSynth filter: ``interpolate(clip, fps=60)`` returns the interpolated clip, its frames made by a daemon.

The settings are mpd-client's engine flags, by their config keys (``client.engine_flags``, the one mapping of
them), and the place the work runs is mpd-client's choice (``placement.SessionOpener``): ``server`` (or
``$MPD_SERVER``), else the daemon at the usual addresses (``$MPD_PROBE``), else the engine in this process when the
``engine`` extra is installed. The output clip has ``ceil(n r)`` frames at the output rate (what the pipe writes
for ``n`` input frames), the input's format and the frame properties that still hold; frames are served in any
order (``access.RandomAccess``). Every failure is a ``multipassdedup.vapoursynth.Error`` with the one line
mpd-client prints: raised by ``interpolate`` for settings and formats, by the frame request for the rest.

Imports VapourSynth, numpy, PyAV and gRPC (a daemon's session); no torch (the in-process engine is reached
through ``placement`` when it runs) and nothing of the daemon.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from fractions import Fraction
from typing import Any

import numpy as np
import vapoursynth as vs

from ...settings import SettingsError
from ..engine_flags import flag_message, settings_from_options
from ..errors import ClientError
from ..placement import SessionOpener, placement_from_environment
from ..rates import format_rational, parse_rational
from .access import OutputFrame, RandomAccess, SourceFrame
from .formats import ClipFormat, ColourProps, FrameCodec, pix_fmt_of

log = logging.getLogger(__name__)

# Frame properties of the input that still hold on the outputs made from it.
KEPT_PROPS = ("_Matrix", "_Range", "_Primaries", "_Transfer", "_ChromaLocation", "_SARNum", "_SARDen")
MAX_SESSIONS = 2  # live sessions: the one streaming in order and one for requests elsewhere (a seek, a thread)


class Error(vs.Error):
    """A failure of the filter, shown as its one-line message.

    VapourSynth reports an exception raised in a frame callback with its traceback; this one shows none (it
    reports ``__traceback__`` as None), so the error reads ``multipassdedup.vapoursynth.Error: <message>``, the
    message being the line mpd-client prints after ``mpd-client: error:``.
    """

    __module__ = "multipassdedup.vapoursynth"  # where users import it from

    @property  # type: ignore[override]
    def __traceback__(self) -> None:
        return None

    @__traceback__.setter
    def __traceback__(self, value: Any) -> None:
        pass


def one_line(error: BaseException) -> str:
    """The message mpd-client prints for ``error`` (after ``mpd-client: error:``)."""
    if isinstance(error, (ClientError, SettingsError)):
        text = str(error)
    elif isinstance(error, MemoryError):
        text = (str(error).splitlines() or ["out of memory"])[0]
    elif isinstance(error, vs.Error):  # the source clip's own failure, whose last line says what
        text = next((line for line in reversed(str(error).splitlines()) if line.strip()), "VapourSynth error")
    else:
        text = f"unexpected {type(error).__name__}: {error}"
    return " ".join(text.split()) or type(error).__name__


def clip_format(clip: vs.VideoNode) -> ClipFormat:
    """The clip's format as the filter checks it; Error for a clip whose format or size varies."""
    fmt = clip.format
    if fmt is None or clip.width == 0 or clip.height == 0:
        raise Error("the clip's format or frame size varies from frame to frame; the filter needs one "
                    "(std.Resize or a source option can fix it)")
    return ClipFormat(fmt.name, fmt.color_family.name, fmt.bits_per_sample, (fmt.subsampling_w, fmt.subsampling_h),
                      fmt.sample_type == vs.INTEGER)


def interpolate(clip: vs.VideoNode, fps: int | float | str | Fraction | None = None, model: str = "rife",
                server: str | None = None, token: str | None = None, *, times: float | str | Fraction | None = None,
                n_pass: int | None = None, scdet: bool | None = None, scdet_threshold: float | None = None,
                scale: float | None = None, compensate_delay: bool | None = None, precision: str | None = None,
                adaptive: bool | None = None, in_fps: int | str | Fraction | None = None, matrix: str = "auto",
                local: bool = False, tls_ca: str | None = None, device: str = "auto",
                threads: int | None = None) -> vs.VideoNode:
    """``clip`` interpolated to ``fps`` (an int, a Fraction or ``"60000/1001"``; 60 when neither it nor ``times``
    is given) by MultiPassDedup, with mpd-client's settings and choice of where the work runs.

    The keywords are mpd-client's long options: ``model`` (rife, gmfss, gimm), ``n_pass``, ``times``, ``scdet``,
    ``scdet_threshold``, ``scale``, ``compensate_delay``, ``precision``, ``adaptive``, ``in_fps`` (the input's rate
    when the clip has none), ``matrix`` (auto: the clip's ``_Matrix``, else a guess from the frame size), ``server``
    (else ``$MPD_SERVER``, else the automatic choice), ``token`` (else ``$MPD_TOKEN``), ``tls_ca``, ``local``,
    ``device`` and ``threads`` (the in-process engine's). Raises ``Error`` for settings the engine cannot use and
    for a format mpd-client's pipe does not take; a frame request that fails raises ``Error`` with mpd-client's
    message (no daemon and no engine, a refused token, a daemon gone mid-clip).
    """
    try:
        options = dict(model=model, n_pass=n_pass, fps=fps, times=times, scdet=scdet, scdet_threshold=scdet_threshold,
                       scale=scale, compensate_delay=compensate_delay, precision=precision, adaptive=adaptive)
        settings = settings_from_options(options)
        fmt = clip_format(clip)
        pix_fmt_of(fmt)  # an unsupported format fails now, not at the first frame
        src_fps = _source_rate(clip, in_fps)
        if threads is not None and threads < 1:
            raise Error(f"--threads must be at least 1, got {threads}")
        if server and local:
            raise Error("--server and --local contradict each other")
        placement = placement_from_environment(server=server, local=local, token=token, tls_ca=tls_ca,
                                               device=device, threads=threads)
        opener = SessionOpener(settings, src_fps, placement)
    except Error:
        raise
    except SettingsError as e:
        raise Error(flag_message(e)) from None
    except (ClientError, ValueError) as e:
        raise Error(one_line(e)) from None
    if clip.num_frames == 0:
        raise Error("the clip has no frames")
    source = _Source(clip, fmt, matrix)
    access = RandomAccess(opener.settings, clip.num_frames, source.read, opener.open, source.encode,
                          cache_frames=cache_size(opener.settings.ratio, vs.core.num_threads),
                          max_sessions=MAX_SESSIONS)
    out_fps = opener.out_fps
    log.info("%s frames at %s fps -> %d frames at %s fps", clip.num_frames, format_rational(src_fps),
             access.n_out, format_rational(out_fps))
    blank = vs.core.std.BlankClip(clip, length=access.n_out, fpsnum=out_fps.numerator, fpsden=out_fps.denominator,
                                  keep=True)

    def make_frame(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        try:
            made = access.frame(n)
        except Error:
            raise
        except BaseException as e:  # noqa: BLE001 -- every failure is one line: the frame request fails with it
            raise Error(one_line(e)) from None
        return source.write(f.copy(), made)

    _close_with_script(access)
    return vs.core.std.ModifyFrame(blank, blank, make_frame)


def cache_size(ratio: Fraction, threads: int) -> int:
    """Finished frames kept: those the threads ask for at once, plus what a session returns at once around a cut
    or at the end (the outputs of several input frames)."""
    return max(32, 2 * threads + 8 * math.ceil(ratio))


def _source_rate(clip: vs.VideoNode, in_fps: int | str | Fraction | None) -> Fraction:
    if in_fps is not None:
        try:
            return parse_rational(str(in_fps), "--in-fps") if not isinstance(in_fps, Fraction) else in_fps
        except ValueError as e:
            raise Error(str(e)) from None
    if clip.fps == 0:
        raise Error("the clip has no constant frame rate; give in_fps=RATE (as mpd-client's --in-fps) or use "
                    "std.AssumeFPS")
    return Fraction(clip.fps.numerator, clip.fps.denominator)


def _close_with_script(access: RandomAccess) -> None:
    """Close the live sessions when the script ends (vspipe, a player closing the file or seeking): a daemon frees
    them. The callback holds the filter weakly: a clip freed before then ends its sessions itself."""
    ref = weakref.ref(access)

    def close() -> None:
        if (alive := ref()) is not None:
            alive.close()

    try:
        vs.register_on_destroy(close)
    except Exception:  # outside a script (plain Python) the sessions end with the clip or the process
        log.debug("no script to close the sessions with", exc_info=True)


class _Source:
    """The input clip's frames as the engine takes them, and outputs back in the clip's format."""

    def __init__(self, clip: vs.VideoNode, fmt: ClipFormat, matrix: str) -> None:
        self.clip = clip
        self.format = fmt
        self.matrix = matrix
        self.codec: FrameCodec | None = None  # made at the first frame read
        self._lock = threading.Lock()

    def _codec(self, frame: vs.VideoFrame | None = None) -> FrameCodec:
        """The converter, made from the first frame read (YUV needs the clip's ``_Matrix`` and ``_Range``; a player's
        clip may start anywhere and serve only frames near the one it plays)."""
        with self._lock:
            if self.codec is None:
                if frame is None:
                    raise RuntimeError("no frame read yet")
                self.codec = FrameCodec(self.format, self.clip.width, self.clip.height,
                                        ColourProps.of(dict(frame.props)), self.matrix)
                log.info("input: %s", self.codec.description)
            return self.codec

    def read(self, i: int) -> SourceFrame:
        frame = self.clip.get_frame(i)
        codec = self._codec(frame)
        packed = codec.pack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])
        props = {key: _plain(frame.props[key]) for key in KEPT_PROPS if key in frame.props}
        return SourceFrame(codec.to_rgb(packed), packed, props)

    def encode(self, rgb: np.ndarray, copies: list) -> bytes:
        return self._codec().encode(rgb, copies)

    def write(self, frame: vs.VideoFrame, made: OutputFrame) -> vs.VideoFrame:
        for p, plane in enumerate(self._codec().unpack(made.packed)):
            np.copyto(np.asarray(frame[p]), plane)
        for key, value in made.props.items():
            frame.props[key] = value
        return frame


def _plain(value: Any) -> Any:
    """A property value as a plain int (VapourSynth gives some as enums) or as it is."""
    return int(value) if isinstance(value, int) else value
