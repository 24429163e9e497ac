"""The cost of splitting one file into chunks (``mpd-client --jobs N``): model calls and wall time against one session.

    python -m multipassdedup.bench.split_cost                          # rife, 256x128, --local, jobs 1,2,4
    python -m multipassdedup.bench.split_cost --jobs 1,2 --threads 1 --json bench/results/split_cost.json

One short clip with several cuts and a long shot (a few short shots, then one long pan) is converted
in-process (``--local``) by file mode (one session) and by the chunked job at each ``--jobs`` value, with
``--chunk-frames`` small enough that the long shot is split into overlapping pieces. Every run goes through
the client's own functions (the ones ``mpd-client -i IN -o OUT [--jobs N] --local`` calls), lossless
``ffv1`` output, so the runs differ only in the splitting. The scene scan and the model load are timed
separately, as they are fixed costs of a job. ``--jobs 1`` with chunks, against one session, is the
splitting's own cost (overlap frames, a session, a seek and an encoder per chunk); the larger values show
what running chunks side by side gives on this machine's cores. Also printed: the overlap's share of
the work, ``(4 n - 3) / L``, for shot lengths ``L`` and pass counts ``n`` (docs/client.md, ``--jobs``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..client.chunks.plan import overlap_frames, plan_chunks

SRC_RATE = Fraction(24000, 1001)
SHORT_SHOTS = (12, 16, 10)     # frames of the short shots before the long one
LONG_SHOT = 96                 # frames of the long pan


def shot_frames(seed: int, frames: int, height: int, width: int) -> list[np.ndarray]:
    """One shot: a random textured background panning right, a bar moving across it (no two frames alike)."""
    rng = np.random.default_rng(seed)
    texture = (rng.random((height // 8, (width + 4 * frames) // 8 + 1, 3)) * 200 + 20).astype(np.uint8)
    texture = texture.repeat(8, 0).repeat(8, 1)
    out = []
    for i in range(frames):
        frame = np.ascontiguousarray(texture[:height, 4 * i:4 * i + width])
        x = (6 * i) % (width - 16)
        frame[height // 3:height // 3 + 20, x:x + 16] = (240, 220, 30)
        out.append(frame)
    return out


def make_clip(path: Path, height: int, width: int) -> int:
    """Write the benchmark clip (lossless ffv1 in mkv at 24000/1001 fps); returns its frame count."""
    frames: list[np.ndarray] = []
    for seed, length in enumerate((*SHORT_SHOTS, LONG_SHOT)):
        frames += shot_frames(seed, length, height, width)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=SRC_RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return len(frames)


def client_argv(src: Path, dst: Path, n_pass: int, fps: str, jobs: int | None, chunk_frames: int) -> list[str]:
    """mpd-client's argv for one run (``jobs`` None: file mode, one session)."""
    argv = ["-i", str(src), "-o", str(dst), "--local", "-m", "rife", "-np", str(n_pass), "-fps", fps,
            "-c", "ffv1", "-y", "-q"]
    if jobs is not None:
        argv += ["--jobs", str(jobs), "--chunk-frames", str(chunk_frames)]
    return argv


def run_client(argv: list[str]) -> tuple[float, dict]:
    """Run mpd-client's file or chunked path in this process; (wall seconds, engine stats totals)."""
    from ..client.chunks.job import ChunkOptions, run_chunked
    from ..client.file.cut import CutRequest
    from ..client.file.encoders import EncodeOptions, parse_encoder_opts
    from ..client.file.output_file import Overwrite
    from ..client.file.transcode import FileChoices, run_file
    from ..client.media.input_options import InputOptions
    from ..client.options import engine_settings, parse_args, placement

    args = parse_args(argv)
    spec = InputOptions(args.raw, args.pix_fmt or "rgb24", args.in_fps, args.cfr, args.matrix)
    encode = EncodeOptions(args.codec, args.crf, args.preset, parse_encoder_opts(args.encoder_opt), args.hwaccel,
                           args.pix_fmt, args.audio_codec, args.audio_bitrate)
    choices = FileChoices(args.container_format, CutRequest(args.cut_start, args.cut_end, args.cut_frames),
                          args.deinterlace, Overwrite(args.overwrite or "ask"))
    start = time.perf_counter()
    if args.jobs > 1 or args.chunk_frames is not None:
        result = run_chunked(Path(args.input), Path(args.output), spec, engine_settings(args), placement(args),
                             encode, choices, False, ChunkOptions(args.jobs, args.chunk_frames))
    else:
        result = run_file(Path(args.input), Path(args.output), spec, engine_settings(args), placement(args),
                          encode, choices, False)
    return time.perf_counter() - start, dict(result.stats)


def time_model_load() -> float:
    """Seconds to load rife in-process (every run above pays it once)."""
    from ..core import load_model

    start = time.perf_counter()
    load_model("rife", device="cpu")
    return time.perf_counter() - start


def time_scan(src: Path, n_pass: int, fps: str) -> tuple[float, list[int]]:
    """Seconds of the chunked job's scene scan (decode every frame, the client's SSIM); the cuts it found."""
    from ..client.chunks.job import scan
    from ..client.file.transcode import describe_input
    from ..client.media.input_options import InputOptions
    from ..client.options import engine_settings, parse_args

    args = parse_args(client_argv(src, src.with_suffix(".x.mkv"), n_pass, fps, 2, 1200))
    info = describe_input(src, InputOptions())
    start = time.perf_counter()
    scanned = scan(src, "rgb24", info.spec, engine_settings(args))
    return time.perf_counter() - start, list(scanned.cuts)


def overlap_table(lengths: list[int], passes: list[int]) -> list[dict]:
    """The overlap's share of the work, ``(4 n - 3) / L``, for pieces of ``L`` frames."""
    return [{"n_pass": n, "overlap_frames": overlap_frames(n),
             "share": {str(length): overlap_frames(n) / length for length in lengths}} for n in passes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1,2,4", help="--jobs values to run (comma separated)")
    parser.add_argument("--chunk-frames", type=int, default=32, help="chunk bound (splits the 96-frame long shot)")
    parser.add_argument("--size", default="256x128", help="WIDTHxHEIGHT of the clip")
    parser.add_argument("--n-pass", type=int, default=2)
    parser.add_argument("--fps", default="60")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (all chunks together)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="mpd-split-cost-"))
    src = work / "clip.mkv"
    n_frames = make_clip(src, height, width)
    load_s = time_model_load()
    scan_s, cuts = time_scan(src, args.n_pass, args.fps)
    ratio = Fraction(args.fps) / SRC_RATE
    chunks = plan_chunks(n_frames, ratio, args.n_pass, cuts, args.chunk_frames)
    frames_run = sum(c.stop - c.start for c in chunks)
    print(f"clip: {n_frames} frames {width}x{height}, shots {SHORT_SHOTS} + {LONG_SHOT}, cuts found {cuts}; "
          f"torch threads {args.threads}, cores {os.cpu_count()}")
    print(f"chunk bound {args.chunk_frames}: {len(chunks)} chunks {[(c.start, c.stop) for c in chunks]}, "
          f"{frames_run} input frames run ({frames_run - n_frames} overlap)")
    print(f"model load {load_s:.2f} s, scene scan {scan_s:.2f} s, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for jobs in [None, *(int(j) for j in args.jobs.split(","))]:
        dst = work / f"out-{jobs or 'one'}.mkv"
        wall, stats = run_client(client_argv(src, dst, args.n_pass, args.fps, jobs, args.chunk_frames))
        row = {"jobs": jobs or "one session", "wall_s": round(wall, 2), "model_calls": int(stats.get("model_calls", 0)),
               "frames_out": sum(1 for _ in av.open(str(dst)).decode(video=0))}
        row["load_average"] = round(os.getloadavg()[0], 1)
        rows.append(row)
        print(f"{row['jobs']!s:>12}: {row['wall_s']:7.2f} s  model calls {row['model_calls']:5d}  "
              f"frames out {row['frames_out']}  load average {row['load_average']}", flush=True)
    table = overlap_table([50, 100, 300, 1200, 5000], [1, 2, 3, 4, 6])
    print("overlap share (4n-3)/L:")
    for entry in table:
        print(f"  n={entry['n_pass']} ({entry['overlap_frames']} frames): "
              + "  ".join(f"L={length}: {share:.2%}" for length, share in entry["share"].items()))
    if args.json:
        args.json.write_text(json.dumps({"frames": n_frames, "size": args.size, "n_pass": args.n_pass,
                                         "fps": args.fps, "threads": args.threads, "cores": os.cpu_count(),
                                         "cuts": cuts, "chunk_frames": args.chunk_frames,
                                         "chunks": [[c.start, c.stop] for c in chunks], "frames_run": frames_run,
                                         "model_load_s": round(load_s, 2), "scan_s": round(scan_s, 2),
                                         "runs": rows, "overlap": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
