"""The encoders for file mode: video codec and pixel format (10-bit kept or asked for), anime defaults, NVENC,
the container's default codec, audio re-encoding, and opening them with the real parameters before any work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av

from ..errors import UsageError
from ..media.libav_log import captured_errors, failure_reason

log = logging.getLogger(__name__)

# Defaults for drawn animation: flat areas and sharp lines want a low CRF and x264's animation tune.
ANIME_DEFAULTS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "slow", "tune": "animation"},
    "libx265": {"crf": "20", "preset": "slow", "x265-params": "log-level=error:aq-mode=3"},
    "h264_nvenc": {"cq": "20", "preset": "p5", "tune": "hq", "rc": "vbr", "b": "0"},
    "hevc_nvenc": {"cq": "20", "preset": "p5", "tune": "hq", "rc": "vbr", "b": "0"},
    "libsvtav1": {"crf": "24", "preset": "6"},
    "libvpx-vp9": {"crf": "30", "row-mt": "1"},  # crf with no bit rate: constant quality
}
NVENC_FOR = {"libx264": "h264_nvenc", "h264": "h264_nvenc", "libx265": "hevc_nvenc", "hevc": "hevc_nvenc"}
# Encoders whose crf option accepts more than they honour (x264 clamps 99 to 51 without a word).
QUALITY_RANGE: dict[str, tuple[float, float]] = {
    "libx264": (0, 51), "libx264rgb": (0, 51), "libx265": (0, 51),
    "h264_nvenc": (0, 51), "hevc_nvenc": (0, 51), "av1_nvenc": (0, 63),
}
# Profiles that need more than 8 bits: asking for one means asking for this pixel format.
PROFILE_PIX_FMT = {"main10": "yuv420p10le", "high10": "yuv420p10le"}


@dataclass
class EncodeOptions:
    """The encoding flags as given: codec (None: the container's default), quality, preset, extra options,
    -hw, the output pixel format, and the audio re-encoding."""

    codec: str | None = None
    crf: float | None = None
    preset: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    hwaccel: bool = False
    pix_fmt: str | None = None
    audio_codec: str | None = None  # None: copy audio as it is
    audio_bitrate: int | None = None


@dataclass
class EncoderChoice:
    """What the output video stream will be encoded with, and which flag set each option (for errors)."""

    codec: str
    pix_fmt: str
    options: dict[str, str]
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def bit_depth(self) -> int:
        return source_layout(self.pix_fmt)[1]


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


def default_encoder(codec: str) -> str | None:
    """The encoder ffmpeg picks for a codec (its first registered one: libx264 for h264), None if there is none."""
    try:
        return av.codec.Codec(codec, "w").name
    except (ValueError, av.error.FFmpegError):
        return None


def default_video_encoder(container_default: str) -> str:
    """The encoder ffmpeg would pick for a container without ``-c:v``: its default codec's first encoder.

    ``container_default`` is the codec name the muxer recommends (h264 for Matroska and MP4, vp9
    for WebM, wrapped_avframe for YUV4MPEG2).
    """
    encoder = default_encoder(container_default)
    if encoder is None:
        raise UsageError(f"the output container's default video codec ({container_default}) has no encoder "
                         "here; choose one with -c")
    return encoder


def choose_encoder(opts: EncodeOptions, src_pix_fmt: str, container_default: str = "h264") -> EncoderChoice:
    """Resolve -c/-hw/--crf/--preset/--encoder-opt/--pix-fmt against what this PyAV build and machine offer.

    Raises UsageError for an unknown encoder or pixel format, a format the encoder cannot take, or
    a --crf outside the encoder's scale. Options the encoder does not know are caught when it is
    opened (``open_encoder``).
    """
    codec = opts.codec or default_video_encoder(container_default)
    if opts.hwaccel and codec not in NVENC_FOR and not codec.endswith("_nvenc"):
        log.warning("-hw: NVENC has no encoder for %s here; encoding on the CPU", codec)
    elif opts.hwaccel:
        nv = NVENC_FOR.get(codec, codec)
        reason = nvenc_works(nv)
        if reason is None:
            codec = nv
        else:
            log.warning("-hw: NVENC (%s) is not available here (%s); encoding with %s on the CPU", nv, reason,
                        codec if not codec.endswith("_nvenc") else "libx264")
            if codec.endswith("_nvenc"):
                codec = "libx264"
    encoder = named_encoder(codec, "video", "-c")
    options = dict(ANIME_DEFAULTS.get(codec, {}))
    origin = dict.fromkeys(options, "the default for " + codec)
    if opts.crf is not None:
        key = "cq" if codec.endswith("_nvenc") else "crf"
        low, high = QUALITY_RANGE.get(codec, (0, float("inf")))
        if not low <= opts.crf <= high:
            scale = f"{low:g} to {high:g}" if high != float("inf") else f"at least {low:g}"
            raise UsageError(f"--crf {opts.crf:g} is outside {codec}'s scale ({scale})")
        options[key], origin[key] = f"{opts.crf:g}", "--crf"
    if opts.preset is not None:
        options["preset"], origin["preset"] = opts.preset, "--preset"
    extra = dict(opts.extra)
    pix_fmt = output_pix_fmt(codec, encoder, opts.pix_fmt, extra.pop("pix_fmt", None), extra.get("profile"),
                             src_pix_fmt)
    options.update(extra)
    origin.update(dict.fromkeys(extra, "--encoder-opt"))
    return EncoderChoice(codec, pix_fmt, options, origin)


def output_pix_fmt(codec: str, encoder: av.codec.Codec, asked: str | None, asked_as_option: str | None,
                   profile: str | None, src_pix_fmt: str) -> str:
    """The pixel format to encode: --pix-fmt (or --encoder-opt pix_fmt=), else what the profile needs,
    else the one closest to the source."""
    if asked and asked_as_option and asked != asked_as_option:
        raise UsageError(f"--pix-fmt {asked} and --encoder-opt pix_fmt={asked_as_option} contradict each other")
    wanted = asked or asked_as_option or PROFILE_PIX_FMT.get((profile or "").lower())
    if wanted is None:
        return pick_pix_fmt(codec, src_pix_fmt)
    try:
        av.VideoFormat(wanted)
    except (ValueError, av.error.FFmpegError):
        raise UsageError(f"unknown pixel format {wanted!r} (ffmpeg -pix_fmts lists them)") from None
    supported = [f.name for f in encoder.video_formats or []]
    if supported and wanted not in supported:
        why = f" (profile {profile} needs it)" if not (asked or asked_as_option) else ""
        raise UsageError(f"{codec} cannot encode {wanted}{why}; it takes {', '.join(supported)}")
    return wanted


def open_encoder(ctx: av.CodecContext, choice: EncoderChoice) -> None:
    """Open the configured encoder now, so a wrong choice is a usage error before any frame is decoded.

    libav hands back the options the encoder did not use: each one is an error (a typo in
    --encoder-opt, --preset for an encoder without presets), as is a value it refuses.
    """
    with captured_errors() as logs:
        try:
            ctx.open()
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise UsageError(f"cannot open the {choice.codec} encoder: {failure_reason(e, logs)}") from None
    unused = dict(ctx.options or {})
    if unused:
        named = ", ".join(f"{key} (from {choice.origin.get(key, 'the options')})" for key in unused)
        raise UsageError(f"{choice.codec} has no option {named}; `ffmpeg -h encoder={choice.codec}` lists its "
                         "options")


def named_encoder(name: str, kind: str, flag: str) -> av.codec.Codec:
    """The ``kind`` ("video" or "audio") encoder that ``flag`` names; UsageError if there is none such."""
    try:
        encoder = av.codec.Codec(name, "w")
    except (ValueError, av.error.FFmpegError):
        raise UsageError(f"unknown {kind} encoder {name!r}") from None
    if encoder.type != kind:
        def article(word: str) -> str:
            return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"

        raise UsageError(f"{name} is {article(encoder.type)} encoder; {flag} takes {article(kind)} encoder")
    return encoder


def check_audio_encoder(name: str) -> av.codec.Codec:
    """The audio encoder --audio-codec names; UsageError if there is none such."""
    return named_encoder(name, "audio", "--audio-codec")


def nearest_sample_rate(encoder: av.codec.Codec, rate: int) -> int:
    """The input's sample rate if the encoder takes it, else the nearest higher (or highest) one it does."""
    rates = list(encoder.audio_rates or [])
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r > rate]
    return min(higher) if higher else max(rates)
