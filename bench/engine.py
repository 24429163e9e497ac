"""Engine benchmark: seconds per output frame and model calls per input frame, per model and size.

    python -m multipassdedup.bench.engine                 # rife and gmfss at 256x128 and 640x360, n_pass=3
    python -m multipassdedup.bench.engine --models rife --sizes 256x128 --frames 12

Each configuration runs the optimised in-process engine in its own process (see ``speed.py``,
which also compares it with the straightforward pipeline).
"""

from __future__ import annotations

import argparse
import sys

from .speed import collect, default_frames, model_label, parse_sizes, spawn, weights_keys
from .synthetic_weights import BenchWeights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m multipassdedup.bench.engine", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="rife,gmfss",
                   help="comma-separated models: rife, gmfss, gimm (synthetic weights when the user's are absent; "
                        "default rife,gmfss)")
    p.add_argument("--sizes", default="256x128,640x360", help="comma-separated WxH (default 256x128,640x360)")
    p.add_argument("--n-pass", type=int, default=3)
    p.add_argument("--adaptive", action="store_true", help="keyframe re-timing instead of the passes")
    p.add_argument("--frames", type=int, default=None, help="input frames per run (default: by model and size)")
    p.add_argument("--clip", default="mixed_pan", help="synthetic clip from bench/clips.py")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    print("| model | size | input frames | output frames | s / output frame | model calls / input frame |")
    print("| --- | --- | --- | --- | --- | --- |")
    with BenchWeights(lambda s: print(s, file=sys.stderr, flush=True)) as weights:
        for model in args.models.split(","):
            loading = weights_keys(model, weights)
            for w, h in parse_sizes(args.sizes):
                n = args.frames or default_frames(model, w)
                cfg = {"kind": "engine", "model": model, "width": w, "height": h, "frames": n, "clip": args.clip,
                       "n_pass": args.n_pass, "variant": "optimised", "threads": args.threads,
                       "adaptive": args.adaptive, **loading}
                r = collect(spawn(cfg, args.threads))
                print(f"| {model_label(cfg)} | {w}x{h} | {n} | {r['frames_out']} "
                      f"| {r['seconds'] / r['frames_out']:.3f} "
                      f"| {r['pipeline']['model_calls'] / n:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
