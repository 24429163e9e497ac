"""The VapourSynth filter through a local daemon: frames per second, latency of the first frame and of a seek.

    python -m multipassdedup.bench.vs_filter                       # from the full environment (.venv)
    python -m multipassdedup.bench.vs_filter --size 640x360 --frames 48 --out /tmp/vs.json

Run from the full environment: it starts a daemon (``--model`` on ``--device``, ``--daemon-threads`` torch threads) and
runs the measuring side in the VapourSynth environment (``--vs-python``, default ``.venv-vs``, which setup.sh makes)
on a synthetic clip: a textured background panning, a square drawn on twos, a cut every ``--shot`` frames.
Measured, each on a new filter (nothing cached), for the adaptive re-timing (the default) and the passes:

- ``first_frame_s``: making the clip and getting output frame 0 (the daemon's session starts, the first inputs);
- ``fps``: every output frame in order, as vspipe asks (``clip.frames``, 4 requests at once), output frames per
  second including the first frame's start;
- ``seek_s``: one output frame far from anything asked before, at a quarter, half and three quarters of the second
  shot (adaptive re-timing streams from the shot's first frame; the passes start a lead-in before the target);
- for contrast, ``pipe_fps``: the same frames as YUV4MPEG2 through ``mpd-client --server`` (one process's wall
  time, its start included).

The result (``--out``, default bench/results/vs_filter.json) records the CPU and the load average before and
after: on a shared machine the figures are lower than on an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC_FPS = Fraction(24000, 1001)
DST_FPS = Fraction(60)
MODES = {"adaptive": {}, "passes": {"n_pass": 2}}


# -- the measuring side (the VapourSynth environment) ----------------------------------------------------------


def synthetic_clip(width: int, height: int, frames: int, shot: int):
    """A YUV420P8 clip: per shot a textured background panning 3 px a frame and a square moving on twos."""
    import numpy as np
    import vapoursynth as vs

    def picture(i: int) -> np.ndarray:
        s, j = divmod(i, shot)
        rng = np.random.default_rng(s)
        bg = rng.integers(40, 215, (height // 4 + 1, (width + 3 * shot) // 4 + 1), dtype=np.uint8)
        bg = np.repeat(np.repeat(bg, 4, 0), 4, 1)[:height, 3 * j: 3 * j + width]
        x = 8 + (j // 2) * 6 % max(1, width - 40)
        bg[height // 3: height // 3 + 24, x: x + 24] = 30
        return bg

    blank = vs.core.std.BlankClip(width=width, height=height, format=vs.YUV420P8, length=frames,
                                  fpsnum=SRC_FPS.numerator, fpsden=SRC_FPS.denominator, color=[128, 128, 128],
                                  keep=True)

    def fill(n: int, f):
        out = f.copy()
        np.copyto(np.asarray(out[0]), picture(n))
        return out

    return vs.core.std.ModifyFrame(blank, blank, fill)


def measure(job: dict) -> dict:
    """Runs in the VapourSynth environment: every figure of the module's docstring but the pipe's."""
    import vapoursynth as vs

    from multipassdedup.vapoursynth import interpolate

    vs.core.num_threads = job["threads"]
    src = synthetic_clip(job["width"], job["height"], job["frames"], job["shot"])
    if job.get("y4m"):
        with open(job["y4m"], "wb") as f:
            src.output(f, y4m=True)
    kwargs = {"fps": str(DST_FPS), "model": job["model"], "server": job["server"]}
    results = {}
    for mode, options in MODES.items():
        started = time.perf_counter()
        clip = interpolate(src, **kwargs, **options)
        clip.get_frame(0)
        first = time.perf_counter() - started
        started = time.perf_counter()
        clip = interpolate(src, **kwargs, **options)
        for _ in clip.frames(prefetch=4, close=True):
            pass
        seconds = time.perf_counter() - started
        ratio = DST_FPS / SRC_FPS
        seeks = []
        for quarter in (1, 2, 3):
            k = int((job["shot"] + job["shot"] * quarter / 4) * ratio)
            clip = interpolate(src, **kwargs, **options)
            clip.get_frame(0)  # a session running at the clip's start, as before a seek
            started = time.perf_counter()
            clip.get_frame(k)
            seeks.append({"output_frame": k, "input_frames_into_shot": job["shot"] * quarter // 4,
                          "seconds": round(time.perf_counter() - started, 3)})
        results[mode] = {"first_frame_s": round(first, 3), "frames_out": clip.num_frames,
                         "fps": round(clip.num_frames / seconds, 2), "seek_s": seeks}
    return results


# -- the orchestrating side (the full environment) -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")


def run(args: argparse.Namespace) -> dict:
    from multipassdedup.client.remote.session import probe

    width, height = (int(v) for v in args.size.split("x"))
    address = f"127.0.0.1:{free_port()}"
    env = os.environ | {"OMP_NUM_THREADS": str(args.daemon_threads)}
    daemon = subprocess.Popen([sys.executable, "-m", "multipassdedup.daemon.main", "--listen", address, "--device",
                               args.device, "--models", args.model], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 180
        while not probe(address):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mpd-daemon did not start")
            time.sleep(0.2)
        load_before = load_average()
        with tempfile.TemporaryDirectory() as tmp:
            job = {"width": width, "height": height, "frames": args.frames, "shot": args.shot, "model": args.model,
                   "server": address, "threads": args.vs_threads, "y4m": str(Path(tmp) / "clip.y4m")}
            proc = subprocess.run([str(args.vs_python), "-m", "multipassdedup.bench.vs_filter", "--measure",
                                   json.dumps(job)], capture_output=True, text=True, cwd=tmp)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            results = json.loads(proc.stdout.splitlines()[-1])
            client = Path(args.vs_python).with_name("mpd-client")
            started = time.perf_counter()
            with open(job["y4m"], "rb") as y4m:
                piped = subprocess.run([str(client), "--server", address, "-fps", str(DST_FPS), "-q"], stdin=y4m,
                                       capture_output=True)
            pipe_seconds = time.perf_counter() - started
            if piped.returncode != 0:
                raise SystemExit(piped.stderr.decode())
            frames_out = piped.stdout.count(b"FRAME")
        return {
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_before": load_before,
                        "load_average_after": load_average()},
            "clip": {"size": args.size, "frames": args.frames, "shot": args.shot, "src_fps": str(SRC_FPS),
                     "dst_fps": str(DST_FPS), "model": args.model, "device": args.device,
                     "daemon_threads": args.daemon_threads,
                     "vapoursynth_threads": args.vs_threads},
            "filter": results,
            "pipe": {"frames_out": frames_out, "seconds": round(pipe_seconds, 3),
                     "pipe_fps": round(frames_out / pipe_seconds, 2)},
        }
    finally:
        daemon.terminate()
        daemon.wait(60)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="256x128")
    p.add_argument("--frames", type=int, default=72, help="input frames (a cut every --shot frames)")
    p.add_argument("--shot", type=int, default=24)
    p.add_argument("--model", default="rife")
    p.add_argument("--device", default="cpu", help="the daemon's device (cuda on a GPU machine)")
    p.add_argument("--daemon-threads", type=int, default=2)
    p.add_argument("--vs-threads", type=int, default=2, help="VapourSynth's threads")
    p.add_argument("--vs-python", type=Path, default=REPO / ".venv-vs" / "bin" / "python")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "vs_filter.json")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # the measuring side's job, in the VapourSynth environment
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    result = run(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
