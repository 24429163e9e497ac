"""EngineSettings: validation with one-line messages naming the field, and the conversions every end uses
(MultiPassDedup's keywords, the wire's SessionConfig, mpd-client's flags and mpd-watch's config)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from helpers.frames import FILM
from multipassdedup.client.engine_flags import add_engine_flags, client_args, settings_args, settings_from_options
from multipassdedup.client.errors import UsageError, WatchConfigError
from multipassdedup.client.options import engine_settings, parse_args
from multipassdedup.client.placement import Placement, open_engine
from multipassdedup.client.watch.config import build_folder
from multipassdedup.daemon.limits import Limits
from multipassdedup.proto import mpd_pb2
from multipassdedup.proto.wire import (
    PixelFormat,
    SessionSettings,
    channel_options,
    max_message_bytes,
    session_config,
    session_settings,
)
from multipassdedup.settings import MAX_RATIO, EngineSettings, SettingsError

DST = {"dst_fps": 60}


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, field, words", [
    ({"model": "", **DST}, "model", "model must name a model"),
    ({"n_pass": -1, **DST}, "n_pass", "n_pass must be a whole number >= 0"),
    ({"n_pass": 1.5, **DST}, "n_pass", "n_pass"),
    ({"n_pass": True, **DST}, "n_pass", "n_pass"),
    ({"n_pass": math.nan, **DST}, "n_pass", "n_pass"),
    ({"n_pass": "3", **DST}, "n_pass", "n_pass"),
    ({"src_fps": 0, **DST}, "src_fps", "src_fps must be positive"),
    ({"src_fps": -24, **DST}, "src_fps", "src_fps must be positive"),
    ({"src_fps": "fast", **DST}, "src_fps", "src_fps must be a number"),
    ({"src_fps": math.inf, **DST}, "src_fps", "src_fps must be a finite number"),
    ({"src_fps": math.nan, **DST}, "src_fps", "src_fps must be a finite number"),
    ({"dst_fps": 0}, "dst_fps", "dst_fps must be positive"),
    ({"dst_fps": -60}, "dst_fps", "dst_fps must be positive"),
    ({"dst_fps": math.inf}, "dst_fps", "dst_fps must be a finite number"),
    ({"dst_fps": "1/0"}, "dst_fps", "dst_fps must be a number"),
    ({"src_fps": 24, "dst_fps": 24}, "dst_fps", "target frame rate 24 must exceed the source frame rate 24"),
    ({"src_fps": 24, "dst_fps": 24 * MAX_RATIO + 1}, "dst_fps", f"must be at most {MAX_RATIO} times"),
    ({"times": 1}, "times", "times must exceed 1, got 1"),
    ({"times": 0.5}, "times", "times must exceed 1, got 1/2"),
    ({"times": -2}, "times", "times must be positive"),
    ({"times": math.inf}, "times", "times must be a finite number, got inf"),
    ({"times": "inf"}, "times", "times must be a number or a ratio"),
    ({"times": math.nan}, "times", "times must be a finite number, got nan"),
    ({"times": 1e308}, "times", f"times must be at most {MAX_RATIO}, got 1e+308"),
    ({}, "dst_fps", "give dst_fps or times"),
    ({"dst_fps": 60, "times": 2}, "times", "give dst_fps or times, not both"),
    ({"scdet": "yes", **DST}, "scdet", "scdet must be true or false"),
    ({"scdet_threshold": math.nan, **DST}, "scdet_threshold", "scdet_threshold must be within [0, 1], got nan"),
    ({"scdet_threshold": -0.1, **DST}, "scdet_threshold", "scdet_threshold must be within [0, 1]"),
    ({"scdet_threshold": 1.5, **DST}, "scdet_threshold", "scdet_threshold must be within [0, 1]"),
    ({"scdet_threshold": "0.3", **DST}, "scdet_threshold", "scdet_threshold must be a number"),
    ({"scale": 0.3, **DST}, "scale", "scale must be one of 0.25, 0.5, 1.0, 2.0, 4.0, got 0.3"),
    ({"scale": math.nan, **DST}, "scale", "scale must be one of"),
    ({"compensate_delay": 2, **DST}, "compensate_delay", "compensate_delay must be true or false"),
])
def test_each_bad_field_is_a_one_line_error_naming_it(fields, field, words) -> None:
    with pytest.raises(SettingsError) as err:
        EngineSettings(**fields)
    assert err.value.field == field
    assert words in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_values_are_normalised_and_frozen() -> None:
    s = EngineSettings(n_pass=2.0, src_fps=23.976, dst_fps="60000/1001", scale=1, scdet_threshold=0)
    assert (s.n_pass, s.src_fps, s.dst_fps, s.scale, s.scdet_threshold) == \
        (2, Fraction(2997, 125), Fraction(60000, 1001), 1.0, 0.0)
    assert type(s.n_pass) is int and type(s.scale) is float and type(s.scdet_threshold) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_pass = 3  # type: ignore[misc]
    assert EngineSettings(times=2.5).times == Fraction(5, 2)


def test_source_rate_comes_later_and_is_checked_then() -> None:
    s = EngineSettings(dst_fps=60)
    assert s.src_fps is None and s.out_fps == 60
    with pytest.raises(SettingsError, match="src_fps is required"):
        _ = s.ratio
    assert s.with_source(FILM).ratio == Fraction(60) / FILM
    with pytest.raises(SettingsError, match="target frame rate 60 must exceed the source frame rate 60"):
        s.with_source(60)
    t = EngineSettings(times=Fraction(5, 2))
    assert t.ratio == Fraction(5, 2) and t.with_source(FILM).out_fps == Fraction(60000, 1001)


def test_keywords_of_the_engine_constructors() -> None:
    # MultiPassDedup/RemoteEngine take a default dst_fps that times overrides, and times=0 for "not given"
    assert EngineSettings.from_keywords(src_fps=24, dst_fps=60, times=2).times == 2
    assert EngineSettings.from_keywords(src_fps=24, dst_fps=60, times=0).dst_fps == 60
    s = EngineSettings(model="gmfss", n_pass=3, src_fps=FILM, times=Fraction(5, 2), scdet=False,
                       scdet_threshold=0.2, scale=0.5, compensate_delay=False)
    assert EngineSettings.from_keywords(model="gmfss", **s.engine_keywords()) == s


# -- the wire --------------------------------------------------------------------------------


ROUND_TRIP = [
    SessionSettings(EngineSettings(src_fps=FILM, dst_fps=60), 128, 64, PixelFormat.RGB24),
    SessionSettings(EngineSettings(model="gmfss", n_pass=5, src_fps=Fraction(30000, 1001), times=Fraction(5, 2),
                                   scdet=False, scdet_threshold=0.0, scale=0.5, compensate_delay=False),
                    3840, 2160, PixelFormat.RGB48LE),
    SessionSettings(EngineSettings(src_fps=25, dst_fps=Fraction(60000, 1001), scdet_threshold=1.0, scale=4.0),
                    7, 3, PixelFormat.RGB24),
    SessionSettings(EngineSettings(src_fps=25, dst_fps=50, precision="bf16"), 8, 8, PixelFormat.RGB24),
    SessionSettings(EngineSettings(src_fps=25, dst_fps=50, precision="fp32"), 8, 8, PixelFormat.RGB24),
]


@pytest.mark.parametrize("session", ROUND_TRIP)
def test_settings_survive_the_wire(session: SessionSettings) -> None:
    cfg = mpd_pb2.SessionConfig.FromString(session_config(session).SerializeToString())
    assert session_settings(cfg) == session


def test_a_ratio_a_double_cannot_hold_travels_as_the_exact_output_rate() -> None:
    session = SessionSettings(EngineSettings(src_fps=FILM, times=Fraction(7, 3)), 64, 32, PixelFormat.RGB24)
    cfg = session_config(session)
    assert cfg.WhichOneof("target") == "dst_fps"
    assert session_settings(cfg).engine.out_fps == session.engine.out_fps == FILM * Fraction(7, 3)


def test_unset_wire_fields_take_the_commands_defaults() -> None:
    cfg = mpd_pb2.SessionConfig(model="rife", src_fps=mpd_pb2.Rational(num=24, den=1),
                                dst_fps=mpd_pb2.Rational(num=60, den=1), width=8, height=8)
    session = session_settings(cfg)
    assert session.engine == EngineSettings(src_fps=24, dst_fps=60)
    assert session.pixel_format is PixelFormat.RGB24 and session.frame_bytes == 8 * 8 * 3


@pytest.mark.parametrize("fields, field, message", [
    (dict(times=math.inf), "times", "times must be a finite number, got inf"),
    (dict(times=1e308), "times", f"times must be at most {MAX_RATIO}, got 1e+308"),
    (dict(scdet_threshold=math.nan), "scdet_threshold", "scdet_threshold must be within [0, 1], got nan"),
    (dict(pixel_format=7), "pixel_format", "unknown pixel format 7; use RGB24 or RGB48LE"),
    (dict(height=0), "width", "width and height are required, got 8x0"),
    (dict(src_fps=None), "src_fps", "src_fps is required"),
    (dict(src_fps=mpd_pb2.Rational(num=-24, den=1)), "src_fps", "src_fps must be a positive rational num/den, "
                                                                 "got -24/1"),
])
def test_bad_wire_fields_name_the_field(fields, field, message) -> None:
    base = dict(model="rife", src_fps=mpd_pb2.Rational(num=24, den=1), dst_fps=mpd_pb2.Rational(num=60, den=1),
                width=8, height=8)
    if "times" in fields:
        del base["dst_fps"]
    base.update(fields)
    with pytest.raises(SettingsError) as err:
        session_settings(mpd_pb2.SessionConfig(**{k: v for k, v in base.items() if v is not None}))
    assert (err.value.field, str(err.value)) == (field, message)


def test_pixel_formats_and_message_size_are_one_table() -> None:
    for fmt, proto, dtype in [(PixelFormat.RGB24, mpd_pb2.RGB24, np.uint8), (PixelFormat.RGB48LE, mpd_pb2.RGB48LE, np.uint16)]:
        assert PixelFormat.of_proto(fmt.proto) is fmt and fmt.proto == proto and PixelFormat(str(fmt)) is fmt
        assert PixelFormat.of_array(np.dtype(dtype)) is fmt and fmt.dtype.itemsize == np.dtype(dtype).itemsize
    assert fmt.dtype == np.dtype("<u2") and PixelFormat.of_array(np.float32) is None
    assert PixelFormat.of_proto(mpd_pb2.PIXEL_FORMAT_UNSPECIFIED) is PixelFormat.RGB24
    # The client's default channel carries the daemon's default largest frame, and the same options.
    assert max_message_bytes() == Limits().max_message_bytes == 4096 * 2160 * 6 + (1 << 20)
    assert dict(channel_options()) == {"grpc.max_receive_message_length": Limits().max_message_bytes,
                                       "grpc.max_send_message_length": Limits().max_message_bytes}


# -- flags and config keys -------------------------------------------------------------------------


def engine_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_engine_flags(parser)
    return parser


@pytest.mark.parametrize("argv", [
    [], ["-m", "gmfss", "-np", "3", "-fps", "60000/1001", "-st", "0.25", "-scale", "0.5"],
    ["-nf", "2", "-t", "2.5", "--no-scdet", "--no-compensate-delay"], ["--fps", "59.94", "-s"],
    ["-t", "7/3", "--scale", "2"], ["--n-pass", "0", "--times", "5:2", "--scdet-threshold", "1"],
    ["--precision", "BF16"], ["--precision", "auto"],
])
def test_flags_settings_child_args_settings(argv: list[str]) -> None:
    settings = settings_from_options(vars(engine_parser().parse_args(argv)))
    child = settings_args(settings)
    assert settings_from_options(vars(engine_parser().parse_args(child))) == settings
    assert engine_settings(parse_args(argv)) == settings == engine_settings(parse_args(child))  # mpd-client's own


def test_watch_config_passes_what_was_written_and_validates_it() -> None:
    folder = build_folder({"in": "/a", "out": "/b", "model": "gmfss", "n_pass": 3, "fps": "59.94", "scale": 0.5,
                           "scdet": False, "compensate_delay": False, "hw": True}, "cli")
    folder.validate()
    args = folder.processing_args()
    assert args == ["-m", "gmfss", "-np", "3", "-fps", "59.94", "--no-scdet", "-scale", "0.5",
                    "--no-compensate-delay", "-hw"]
    assert args[:-1] == client_args(folder.engine_options())
    assert engine_settings(parse_args(args)) == settings_from_options(folder.engine_options())
    precise = build_folder({"in": "/a", "out": "/b", "precision": "fp32"}, "cli")
    assert precise.processing_args() == ["--precision", "fp32"]
    assert settings_from_options(precise.engine_options()).precision == "fp32"
    for bad, key in [({"n_pass": -1}, "n_pass"), ({"times": "1"}, "times"), ({"scale": 3}, "scale"),
                     ({"fps": "sixty"}, "fps"), ({"scdet_threshold": 2.0}, "scdet_threshold"),
                     ({"precision": "fp64"}, "precision")]:
        with pytest.raises(WatchConfigError, match=f"^/a: {key}"):
            build_folder({"in": "/a", "out": "/b", **bad}, "cli").validate()


@pytest.mark.parametrize("argv, words", [
    (["-np", "-1"], "-np: n_pass must be a whole number >= 0"),
    (["-t", "1"], "-t: times must exceed 1"),
    (["-t", "1e308"], "-t: times must be at most"),
    (["-st", "nan"], "-st: scdet_threshold must be within [0, 1], got nan"),
    (["-scale", "0.3"], "-scale: scale must be one of"),
])
def test_client_flag_errors_name_the_flag(argv: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=f"^{words}".replace("[", r"\[").replace("]", r"\]")):
        parse_args(argv)


def test_client_refuses_a_target_at_or_below_the_input_rate_before_any_work() -> None:
    # The hint says what to give: the user may well have given -fps (too low), so "use -fps" helped nobody.
    with pytest.raises(UsageError, match=r"^-fps: target frame rate 30 must exceed the source frame rate 60; give "
                                         r"-fps above 60, or -t N for N times the input's rate$"):
        open_engine(engine_settings(parse_args(["-fps", "30"])), Fraction(60), Placement(local=True))


def test_settings_flags_and_wire_import_neither_torch_nor_core() -> None:
    code = ("import sys\n"
            "import multipassdedup.settings, multipassdedup.proto.wire, multipassdedup.client.engine_flags\n"
            "import multipassdedup.client.options, multipassdedup.client.remote.session, multipassdedup.client.watch.main\n"
            "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('multipassdedup.core')]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


def test_the_client_path_imports_neither_torch_nor_core_nor_grpc_before_it_runs() -> None:
    """Every module on a thin client's path imports without the engine; gRPC is not imported either, so the
    commands set gRPC core's log verbosity before it loads (and a pure in-process run never loads it)."""
    modules = ["multipassdedup.client.main", "multipassdedup.client.placement", "multipassdedup.client.pipe.filter",
               "multipassdedup.client.file.transcode", "multipassdedup.client.remote.daemon_status", "multipassdedup.engine_extra",
               "multipassdedup.client.remote.grpc_logging", "multipassdedup.client.watch.main",
               "multipassdedup.client.watch.placement", "multipassdedup.weights.cli"]
    code = ("import sys\n"
            f"for name in {modules!r}: __import__(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'grpc')\n"
            "             or m.startswith(('multipassdedup.core', 'multipassdedup.daemon'))))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parent).stdout
    assert loaded.strip() == "[]"


def test_rationals_in_messages_stay_short() -> None:
    from multipassdedup.settings import shown

    assert [shown(Fraction(24000, 1001)), shown(Fraction(5, 2)), shown(Fraction(1, 2 * 10 ** 323))] == [
        "24000/1001", "5/2", "4.94066e-324"]
    assert [shown(Fraction(10 ** 400)), shown(Fraction(-(10 ** 400))), shown(Fraction(1, 10 ** 400))] == [
        "about 1e+400", "about -1e+400", "about 1e-400"]
    with pytest.raises(SettingsError, match="^target frame rate about 1e\\+400 must be at most 1000 times"):
        EngineSettings(src_fps=24, dst_fps="1e400")  # float(dst) raised OverflowError here


def test_client_refuses_a_precision_the_model_does_not_run_in() -> None:
    settings = engine_settings(parse_args(["-m", "gimm", "--precision", "bf16"]))
    with pytest.raises(UsageError, match=r"^gimm runs in fp32 only \(its quality in bf16 is not measured\)"):
        open_engine(settings, Fraction(24), Placement(local=True, device="cpu"))


def test_a_misspelt_model_is_refused_with_the_options_before_any_input_is_read() -> None:
    from multipassdedup.core import available_models
    from multipassdedup.settings import MODEL_NAMES

    assert sorted(MODEL_NAMES) == sorted(available_models())  # the commands' list is the engine's
    with pytest.raises(UsageError, match=r"^-m: unknown model 'rfie'; the models are rife, gmfss, gimm "
                                         r"\(did you mean rife\?\)$"):
        parse_args(["-m", "rfie", "-i", "/nonexistent/in.mkv", "-o", "out.mkv"])  # was found after probing the input
    assert engine_settings(parse_args(["-m", "gimm"])).model == "gimm"


def test_the_client_takes_the_log_level_as_the_daemon_and_the_watcher_spell_it() -> None:
    from multipassdedup.client.options import verbose_requested

    for argv, level in [([], "info"), (["--log-level", "error"], "error"), (["-q"], "warning"), (["-v"], "debug"),
                        (["--log-level=debug"], "debug")]:
        args = parse_args(argv)
        assert args.log_level == level, argv
        assert args.verbose == (level == "debug") and args.quiet == (level in ("warning", "error"))
        assert verbose_requested(argv) == (level == "debug")
    with pytest.raises(UsageError, match="not allowed with argument -q/--quiet"):
        parse_args(["-q", "--log-level", "debug"])  # one or the other
