"""The video encoder for file mode: codec, pixel format (keeping 10-bit and the chroma layout), anime defaults,
NVENC."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av

from .exitcodes import UsageError

log = logging.getLogger(__name__)

# Defaults for drawn animation: flat areas and sharp lines want a low CRF and x264's animation tune.
ANIME_DEFAULTS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "slow", "tune": "animation"},
    "libx265": {"crf": "20", "preset": "slow", "x265-params": "log-level=error:aq-mode=3"},
    "h264_nvenc": {"cq": "20", "preset": "p5", "tune": "hq", "rc": "vbr", "b": "0"},
    "hevc_nvenc": {"cq": "20", "preset": "p5", "tune": "hq", "rc": "vbr", "b": "0"},
    "libsvtav1": {"crf": "24", "preset": "6"},
}
NVENC_FOR = {"libx264": "h264_nvenc", "h264": "h264_nvenc", "libx265": "hevc_nvenc", "hevc": "hevc_nvenc"}


@dataclass
class EncodeOptions:
    """The encoding flags as given: codec, quality, preset, extra options, -hw."""

    codec: str = "libx264"
    crf: float | None = None
    preset: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    hwaccel: bool = False


@dataclass
class EncoderChoice:
    """What the output video stream will be encoded with."""

    codec: str
    pix_fmt: str
    options: dict[str, str]


def parse_encoder_opts(items: list[str]) -> dict[str, str]:
    """``["x265-params=aq-mode=3", "g=240"]`` -> dict; the first ``=`` splits key from value."""
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--encoder-opt wants KEY=VALUE, got {item!r}")
        opts[key] = value
    return opts


def source_layout(pix_fmt: str) -> tuple[str, int]:
    """(chroma family "420" | "422" | "444" | "gray", bit depth) of a decoded pixel format."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.error.FFmpegError):
        return "420", 8
    depth = max(c.bits for c in fmt.components)
    if fmt.is_rgb or pix_fmt.startswith(("gbr", "yuv444", "yuvj444", "yuva444")):
        return "444", depth
    if pix_fmt.startswith(("yuv422", "yuvj422", "yuva422", "nv16", "p210", "p216")):
        return "422", depth
    if pix_fmt.startswith("gray"):
        return "gray", depth
    return "420", depth


def pick_pix_fmt(codec: str, src_pix_fmt: str) -> str:
    """The encoder format closest to the source: same chroma layout and >8-bit kept when the codec can."""
    family, depth = source_layout(src_pix_fmt)
    supported = [f.name for f in av.codec.Codec(codec, "w").video_formats or []]
    deep = depth > 8
    if family == "gray":
        family = "420"
    candidates = []
    for fam in (family, "420"):
        if deep:
            candidates += [f"yuv{fam}p10le", {"420": "p010le", "422": "p210le", "444": "yuv444p16le"}[fam]]
        candidates.append(f"yuv{fam}p")
    for name in candidates:
        if not supported or name in supported:
            return name
    return supported[0]


def nvenc_works(codec: str) -> str | None:
    """None if ``codec`` (an NVENC encoder) opens on this machine, else the reason it does not."""
    try:
        ctx = av.CodecContext.create(codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except (av.error.FFmpegError, ValueError, OSError) as e:
        return str(e).strip() or type(e).__name__
    return None


def choose_encoder(opts: EncodeOptions, src_pix_fmt: str) -> EncoderChoice:
    """Resolve -c/-hw/--crf/--preset/--encoder-opt against what this PyAV build and machine offer."""
    codec = opts.codec
    if opts.hwaccel:
        nv = NVENC_FOR.get(codec, codec if codec.endswith("_nvenc") else "h264_nvenc")
        reason = nvenc_works(nv)
        if reason is None:
            codec = nv
        else:
            log.warning("-hw: NVENC (%s) is not available here (%s); encoding with %s on the CPU", nv, reason,
                        codec if not codec.endswith("_nvenc") else "libx264")
            if codec.endswith("_nvenc"):
                codec = "libx264"
    try:
        av.codec.Codec(codec, "w")
    except (ValueError, av.error.FFmpegError):
        raise UsageError(f"unknown video encoder {codec!r}") from None
    options = dict(ANIME_DEFAULTS.get(codec, {}))
    if opts.crf is not None:
        options["cq" if codec.endswith("_nvenc") else "crf"] = f"{opts.crf:g}"
    if opts.preset is not None:
        options["preset"] = opts.preset
    options.update(opts.extra)
    return EncoderChoice(codec, pick_pix_fmt(codec, src_pix_fmt), options)
