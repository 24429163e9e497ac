"""The engine's flags, mapped once for mpd-client, mpd-watch's command line and mpd-watch's config file.

The three speak the same options (the original program's flags): ``add_engine_flags`` puts them
on an argparse parser, ``settings_from_options`` turns the given ones (from parsed flags or config
keys) into ``EngineSettings``, and ``client_args`` / ``settings_args`` turn them back into
mpd-client arguments, which mpd-watch passes to its child mpd-client processes. A config key is
the argparse ``dest`` of its flag, so a parsed command line and a config table are read alike.

Imports no torch and nothing of ``core``: the thin clients use it.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from ..settings import DEFAULT_DST_FPS, MODEL_NAMES, PRECISIONS, EngineSettings, SettingsError, quoted
from .rates import format_rational, parse_rational

# Config-file key of each engine option (also the argparse dest of its flag) and the flag it is passed
# to mpd-client with, in the order mpd-watch writes them (a folder's options digest hashes that text).
CHILD_FLAGS = (("model", "-m"), ("n_pass", "-np"), ("fps", "-fps"), ("times", "-t"), ("scdet", "--no-scdet"),
               ("scdet_threshold", "-st"), ("scale", "-scale"), ("compensate_delay", "--no-compensate-delay"),
               ("precision", "--precision"), ("adaptive", "--adaptive"))
SWITCHES = {"scdet", "compensate_delay"}  # on by default: passed only when off
CHOICES = {"adaptive"}  # passed as given, on (--adaptive) or off (--no-adaptive): its default depends on other flags
ENGINE_KEYS = tuple(key for key, _ in CHILD_FLAGS)
# The flag that sets each EngineSettings field, for messages (--in-fps, or the stream, sets src_fps).
FLAG_OF_FIELD = {**dict(CHILD_FLAGS), "dst_fps": "-fps", "src_fps": "--in-fps"}


def _rate_text(flag: str) -> Callable[[str], str]:
    """An argparse type that checks a rate and keeps its text as written (mpd-watch passes it on unchanged)."""

    def check(text: str) -> str:
        try:
            parse_rational(text, flag)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    check.__name__ = flag
    return check


def add_engine_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The engine flags as a group of ``parser``. Every default is None, meaning "not given":
    ``settings_from_options`` fills in the defaults, and mpd-watch passes on only what was given."""
    eng = parser.add_argument_group("interpolation (the original program's flags)")
    eng.add_argument("-m", "--model", help="rife (default, fast), gmfss (best for anime, slower) or gimm "
                     "(GIMM-VFI-R; its weights are brought by the user, see mpd-weights list)")
    eng.add_argument("-np", "-nf", "--n-pass", dest="n_pass", type=int,
                     help="passes (0 = automatic: 2 for film and PAL rates, 4 for 29.97, 6 for 59.94)")
    target = eng.add_mutually_exclusive_group()
    target.add_argument("-fps", "--fps", dest="fps", type=_rate_text("-fps"), metavar="RATE",
                        help="output frame rate, exact: 60, 60000/1001 (default 60)")
    target.add_argument("-t", "--times", dest="times", type=_rate_text("-t"), metavar="X",
                        help="output rate as a multiple of the input rate (e.g. 2.5)")
    eng.add_argument("-s", "--scdet", dest="scdet", action="store_true", default=None,
                     help="scene change detection (on by default; kept for compatibility)")
    eng.add_argument("--no-scdet", dest="scdet", action="store_false", help="turn scene change detection off")
    eng.add_argument("-st", "--scdet-threshold", dest="scdet_threshold", type=float,
                     help="SSIM below this is a scene change (default 0.3)")
    eng.add_argument("-scale", "--scale", dest="scale", type=float,
                     help="flow scale: 1.0 for 1080p, 0.5 for 4K (0.25, 0.5, 1, 2, 4; default 1.0)")
    eng.add_argument("--no-compensate-delay", dest="compensate_delay", action="store_false", default=None,
                     help="the original program's timing (output lags the input by (passes-1)/2 frames)")
    eng.add_argument("--precision", type=str.lower, choices=PRECISIONS,
                     help="arithmetic of the model calls: auto (default: fp16 on CUDA; on a CPU bf16 only where it "
                          "keeps golden quality and gains speed, else fp32), fp32, bf16, fp16. A daemon serves "
                          "the precisions it was started with and refuses others")
    eng.add_argument("--adaptive", dest="adaptive", action=argparse.BooleanOptionalAction, default=None,
                     help="keyframe re-timing instead of the passes: held drawings smoothed, the rest kept sharp "
                          "(default: on, unless -np or --no-compensate-delay asks for the passes; "
                          "--no-adaptive gives the original method; docs/design.md)")
    return eng


# NVENC encoding: one spelling set for mpd-client and mpd-watch (mpd-watch passes the first to mpd-client).
HWACCEL_FLAGS = ("-hw", "--hwaccel", "--hw")


def add_hwaccel_flag(group: argparse._ArgumentGroup, dest: str, default: bool | None = False) -> None:
    """The NVENC switch under every spelling in ``HWACCEL_FLAGS``; ``dest`` is the caller's key (mpd-watch: ``hw``,
    its config key; mpd-client: ``hwaccel``), ``default`` None when "not given" must be told from "off"."""
    group.add_argument(*HWACCEL_FLAGS, dest=dest, action="store_true", default=default,
                       help="encode with NVENC (h264_nvenc for libx264, hevc_nvenc for libx265) when the machine "
                            "has it; otherwise say so and encode on the CPU")


def _given(options: Mapping[str, Any]) -> dict[str, Any]:
    """The engine options that are set: None and "" (a config file's way to unset a default) are not."""
    return {k: v for k in ENGINE_KEYS if (v := options.get(k)) is not None and v != ""}


def _rate(value: Any, key: str, field: str) -> Fraction | Any:
    """A rate as written (text, with 60000:1001 allowed) as a Fraction; numbers go to EngineSettings as they are."""
    if not isinstance(value, str):
        return value
    try:
        return parse_rational(value, key)
    except ValueError as e:
        raise SettingsError(field, str(e)) from None


def _number(value: Any, key: str, kind: type) -> Any:
    """A number written as text (a config file's ``n_pass = "3"``) read as mpd-client reads its flag."""
    if not isinstance(value, str):
        return value
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(key, f"{key} must be {what}, got {value!r}") from None


def adaptive_by_default(given: Mapping[str, Any]) -> bool:
    """The commands' choice when ``adaptive`` is not given: keyframe re-timing, unless the options ask for the
    passes (a number of passes, or the original program's timing)."""
    return "n_pass" not in given and given.get("compensate_delay", True) is not False


def settings_from_options(options: Mapping[str, Any], src_fps: Fraction | None = None) -> EngineSettings:
    """EngineSettings from engine options by config key (parsed flags: ``vars(args)``); unset ones take the
    commands' defaults (``adaptive_by_default``), and the output rate is 60 fps when neither ``fps`` nor ``times``
    is set. Raises SettingsError."""
    given = _given(options)
    if "adaptive" not in given:
        given["adaptive"] = adaptive_by_default(given)
    for key, kind in (("n_pass", int), ("scdet_threshold", float), ("scale", float)):
        if key in given:
            given[key] = _number(given[key], key, kind)
    fps, times = given.pop("fps", None), given.pop("times", None)
    if fps is not None and times is not None:
        raise SettingsError("times", "give fps or times, not both")
    if times is not None:
        given["times"] = _rate(times, "times", "times")
    else:
        given["dst_fps"] = DEFAULT_DST_FPS if fps is None else _rate(fps, "fps", "dst_fps")
    settings = EngineSettings(src_fps=src_fps, **given)
    if settings.model not in MODEL_NAMES:  # a typo is refused now, not after the input was probed
        close = difflib.get_close_matches(settings.model, MODEL_NAMES, n=1)
        raise SettingsError("model", f"unknown model {quoted(settings.model)}; the models are "
                                     f"{', '.join(MODEL_NAMES)}{f' (did you mean {close[0]}?)' if close else ''}")
    return settings


def client_args(options: Mapping[str, Any]) -> list[str]:
    """mpd-client arguments for the engine options that are set, values as written (switches only when off)."""
    given = _given(options)
    args: list[str] = []
    for key, flag in CHILD_FLAGS:
        if key in SWITCHES:
            args += [flag] if given.get(key) is False else []
        elif key in CHOICES:
            args += [] if key not in given else [flag] if given[key] is True else ["--no-" + flag.removeprefix("--")]
        elif key in given:
            args += [flag, str(given[key])]
    return args


def engine_options(settings: EngineSettings) -> dict[str, Any]:
    """The config keys of ``settings`` (every one set; ``src_fps`` is the input's, not an engine option)."""
    return {"model": settings.model, "n_pass": settings.n_pass,
            "fps": None if settings.dst_fps is None else format_rational(settings.dst_fps),
            "times": None if settings.times is None else format_rational(settings.times),
            "scdet": settings.scdet, "scdet_threshold": settings.scdet_threshold, "scale": settings.scale,
            "compensate_delay": settings.compensate_delay,
            "precision": None if settings.precision == "auto" else settings.precision, "adaptive": settings.adaptive}


def settings_args(settings: EngineSettings) -> list[str]:
    """mpd-client arguments that give a child process exactly ``settings`` (but ``src_fps``)."""
    return client_args(engine_options(settings))


def flag_message(error: SettingsError) -> str:
    """The error with the flag that sets its field in front, for a command-line user."""
    flag = FLAG_OF_FIELD.get(error.field)
    return f"{flag}: {error}" if flag else str(error)
