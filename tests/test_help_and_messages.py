"""The commands' help and messages as a user meets them: real commands, real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from helpers.commands import ENV, FFMPEG, script


def run(command: str, *args: str, data: bytes = b"", cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``COMMAND ARGS`` run to its end with ``data`` on stdin, in ``ENV`` with ``env`` added; its output as bytes."""
    return subprocess.run(script(command) + list(args), input=data, capture_output=True, env=ENV | (env or {}),
                          timeout=300, cwd=cwd)


def help_text(command: str) -> str:
    """``COMMAND --help`` with its lines joined, so that a flag and its wrapped help read as one."""
    proc = run(command, "--help")
    assert proc.returncode == 0, proc.stderr.decode()
    return " ".join(proc.stdout.decode().split())


def flag_help(text: str, flags: str) -> str:
    """The help after ``flags`` (as argparse lists them) up to the next option."""
    rest = text.split(f" {flags} ", 1)[1]
    return rest.split(" -", 1)[0]


def test_mpd_watch_engine_flags_have_help_and_mpd_clients_spellings() -> None:
    watch, client = help_text("mpd-watch"), help_text("mpd-client")
    for flags in ("-m MODEL, --model MODEL", "-np N_PASS, -nf N_PASS, --n-pass N_PASS", "-fps RATE, --fps RATE",
                  "-t X, --times X", "-s, --scdet", "-st SCDET_THRESHOLD, --scdet-threshold SCDET_THRESHOLD",
                  "-scale SCALE, --scale SCALE", "-hw, --hwaccel, --hw"):
        assert len(flag_help(watch, flags)) > 15, flags  # a sentence, not nothing
        assert flag_help(watch, flags) == flag_help(client, flags), flags  # one text, one spelling set
    assert "default 1.0" in flag_help(watch, "-scale SCALE, --scale SCALE")


def test_daemon_log_level_and_demo_help() -> None:
    assert "least severe log lines written to stderr (default info" in help_text("mpd-daemon")
    demo = help_text("mpd-demo")
    assert "``" not in demo and demo.count("Render a short cel-style sample clip") == 1


@pytest.mark.parametrize("command", ["mpd-client", "mpd-watch", "mpd-daemon", "mpd-weights", "mpd-demo"])
def test_every_command_says_its_version(command: str) -> None:
    from multipassdedup import __version__

    proc = run(command, "--version")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == f"{command} {__version__}"


def test_an_explicit_cuda_device_that_is_not_there_is_exit_69_not_the_cpu() -> None:
    """``--device cuda`` asks for CUDA: without it (none visible here) the commands refuse in one line, exit 69
    (EX_UNAVAILABLE), where they ran on the CPU after a warning; ``auto`` still takes the CPU."""
    no_cuda = {"CUDA_VISIBLE_DEVICES": ""}
    frame = bytes(64 * 64 * 3 // 2)
    data = b"YUV4MPEG2 W64 H64 F24:1 Ip C420jpeg\n" + (b"FRAME\n" + frame) * 2
    for device in ("cuda", "cuda:1"):
        proc = run("mpd-client", "--local", "--device", device, "-np", "1", data=data, env=no_cuda)
        err = proc.stderr.decode()
        assert proc.returncode == 69, err
        (error,) = [line for line in err.splitlines() if "error" in line]
        assert error.startswith(f"mpd-client: error: --device {device}: no such CUDA device here"), err
        assert proc.stdout == b""
    daemon = run("mpd-daemon", "--device", "cuda", "--listen", "127.0.0.1:0", env=no_cuda)
    err = daemon.stderr.decode()
    assert daemon.returncode == 69, err
    assert "--device cuda: no CUDA device is available here" in err and len(err.splitlines()) == 1
    auto = run("mpd-client", "--local", "--device", "auto", "-np", "1", data=data, env=no_cuda)
    assert auto.returncode == 0 and auto.stdout.startswith(b"YUV4MPEG2"), auto.stderr.decode()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "in.mkv"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=24", "-frames:v",
                    "4", "-c:v", "libx264", "-preset", "ultrafast", str(path)], check=True)
    return path


@pytest.mark.parametrize("spelling", ["-frames:v", "-frames", "-vframes"])
def test_ffmpeg_frame_count_spellings_mean_frames(clip: Path, tmp_path: Path, spelling: str) -> None:
    out = tmp_path / "out.mkv"
    proc = run("mpd-client", "-i", str(clip), "-o", str(out), spelling, "2", "--local", "-np", "1")
    assert proc.returncode == 0, proc.stderr.decode()
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2


@pytest.mark.parametrize(("words", "message"), [
    (["-frames:a", "3"], "unknown option -frames:a (it would read as -f rames:a); did you mean --frames?"),
    (["-crf", "18"], "unknown option -crf (it would read as -c rf); did you mean --crf?"),
    (["-c:v", "libx264"], "unknown option -c:v (it would read as -c :v); did you mean -c "),
])
def test_glued_short_options_are_refused_with_a_hint(clip: Path, tmp_path: Path, words: list[str],
                                                      message: str) -> None:
    proc = run("mpd-client", "-i", str(clip), "-o", str(tmp_path / "out.mkv"), *words, "--local")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and message in err, err
    assert not (tmp_path / "out.mkv").exists()
