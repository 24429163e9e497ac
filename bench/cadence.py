"""Cadence benchmark: every method on synthetic clips with a known ideal, scored for picture error and judder.

    python -m multipassdedup.bench.cadence             # the default run (see docs/benchmarks.md)
    python -m multipassdedup.bench.cadence --quick     # a few minutes: rife, two short clips
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ..core import load_model
from .clips import CLIP_NAMES, make_clip
from .evaluate import IdealFrames, score_output
from .machine import describe, load_average
from .methods import Method, method_from_code, run_method, standard_methods
from .metrics import SSIM, shift_grid
from .report import ADAPTIVE, adaptive_table, delay_table, lag_table, plot_cadence, summary_table
from .synthetic_weights import BenchWeights

IDEAL = "ideal (truth)"


@dataclass(frozen=True)
class ModelPlan:
    """Which clips (and how many input frames of each) one model is run on, with which methods."""

    clips: tuple[str, ...]
    frames: int
    methods: tuple[Method, ...]


def plans(profile: str) -> dict[str, ModelPlan]:
    """The built-in run profiles; gmfss is about ten times slower than rife on the CPU, so it gets one clip
    (and so does any other model asked for with ``--models``, such as gimm)."""
    quick_methods = (Method("repeat"), Method("dedup"), Method("mpd", 1), Method("mpd", 2),
                     Method("mpd", 2, compensate_delay=True), Method("mpd", 3), Method("mpd", 3, compensate_delay=True))
    if profile == "quick":
        return {"rife": ModelPlan(("ones_pan", "mixed_pan"), 24, quick_methods)}
    if profile == "default":
        return {"rife": ModelPlan(CLIP_NAMES, 24, tuple(standard_methods(4))),
                "gmfss": ModelPlan(("mixed_pan",), 24, tuple(standard_methods(3)))}
    if profile == "full":
        return {m: ModelPlan(CLIP_NAMES, 48, tuple(standard_methods(4))) for m in ("rife", "gmfss")}
    raise ValueError(f"unknown profile {profile!r}")


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def result_key(r: dict) -> tuple:
    return r["model"], r.get("precision", "fp32"), r["clip"], r["frames_in"], tuple(r["size"]), r["method"]


class ResultFile:
    """The JSON file results accumulate in (rewritten after each run, so an interrupted run can resume)."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.data = {"machine": describe(), "results": []}
        if resume and path.exists():
            self.data = json.loads(path.read_text())
            self.data["machine"] = describe()
        self.done = {result_key(r) for r in self.data["results"]}

    def add(self, record: dict) -> None:
        self.data["results"] = [r for r in self.data["results"] if result_key(r) != result_key(record)]
        self.data["results"].append(record)
        self.done.add(result_key(record))
        self.save()

    def save(self) -> None:
        self.data["machine"]["load_average_last"] = load_average()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1))


def run(profile: dict[str, ModelPlan], size: tuple[int, int], dst_fps: Fraction, results: ResultFile,
        shifts: list[float], log=print, weights: BenchWeights | None = None, precision: str = "fp32") -> None:
    """Every method of each model's plan on its clips, scored against the ideal; results are added to ``results``
    as they come. ``weights`` gives each model's weights folder (synthetic for gimm without the user's files:
    its records say so, and its picture scores then mean nothing); ``precision`` is the models' precision."""
    ssim = SSIM()
    models: dict = {}
    clip_names = list(dict.fromkeys(c for p in profile.values() for c in p.clips))
    for clip_name in clip_names:
        for frames_in in sorted({p.frames for p in profile.values() if clip_name in p.clips}):
            clip = make_clip(clip_name, size[0], size[1], frames_in)
            frames = clip.frames()
            ideal = IdealFrames(clip)
            for model_name, plan in profile.items():
                if clip_name not in plan.clips or plan.frames != frames_in:
                    continue
                todo = [(m.order, m) for m in plan.methods
                        if (model_name, precision, clip_name, frames_in, size, m.label) not in results.done]
                if not todo:
                    continue
                folder = weights.folder_for(model_name) if weights is not None else None
                if model_name not in models:
                    models[model_name] = load_model(model_name, device="cpu", weights_dir=folder, precision=precision)
                base = {"model": model_name, "precision": models[model_name].precision, "clip": clip_name,
                        "frames_in": frames_in, "size": list(size),
                        "src_fps": str(clip.fps), "dst_fps": str(dst_fps),
                        **({"synthetic_weights": True} if folder is not None else {})}
                if (model_name, precision, clip_name, frames_in, size, IDEAL) not in results.done:
                    step = float(clip.fps / dst_fps)
                    truth = [ideal(k * step) for k in range(int(frames_in * dst_fps / clip.fps) + 1)]
                    score = score_output(clip, truth, dst_fps, ideal, shifts, ssim)
                    results.add({**base, "method": IDEAL, "order": -1, "frames_out": score.frames_scored,
                                 "model_calls": 0, "seconds": 0.0, "counters": {}, "score": score.to_json()})
                for order, method in todo:
                    t0 = time.perf_counter()
                    out = run_method(method, models[model_name], frames, clip.fps, dst_fps)
                    score = score_output(clip, out.frames, out.out_fps, ideal, shifts, ssim)
                    record = {**base, "method": method.label, "order": order, "frames_out": len(out.frames),
                              "model_calls": out.model_calls, "seconds": round(out.seconds, 2),
                              "counters": out.counters, "score": score.to_json()}
                    results.add(record)
                    jud = ", ".join(f"{c.name}{c.hold}:{c.judder_px:.2f}" for c in score.characters)
                    log(f"{model_name:6s} {clip_name:12s} {method.label:26s} PSNR {score.psnr:6.2f} "
                        f"best {score.best_shift:+.2f} -> {score.psnr_at_best:6.2f}  judder {jud}  "
                        f"calls {out.model_calls}  {out.seconds:.0f}s "
                        f"(+{time.perf_counter() - t0 - out.seconds:.0f}s scoring)")


def report(data: dict) -> str:
    """The markdown tables for every model (and precision other than fp32) in a result file."""
    results = [r if r.get("precision", "fp32") == "fp32" else {**r, "model": f"{r['model']} {r['precision']}"}
               for r in data["results"]]
    parts = []
    for model in dict.fromkeys(r["model"] for r in results):
        if any(r.get("synthetic_weights") for r in results if r["model"] == model):
            parts += [f"**{model} ran on SYNTHETIC weights** (the user's files were absent): its timings hold, "
                      f"its picture scores mean nothing.", ""]
        parts += [f"### {model}: averaged over clips", summary_table(results, model), "",
                  f"### {model}: best constant time shift per clip (input frames; PSNR dB at zero → best shift)",
                  delay_table(results, model), "",
                  f"### {model}: tracked character delay by cadence (input frames)", lag_table(results, model), ""]
        if any(r["model"] == model and r["method"] == ADAPTIVE for r in results):
            parts += [f"### {model}: adaptive against plain and n_pass=3 compensated, per clip (the adaptive goals)",
                      adaptive_table(results, model), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m multipassdedup.bench.cadence", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="rife only, two 24-frame clips, n_pass up to 3")
    ap.add_argument("--full", action="store_true", help="both models, all clips, 48 frames (hours on a CPU)")
    ap.add_argument("--models", help="comma-separated models (rife,gmfss of the profile; gimm runs on synthetic "
                                     "weights when the user's are absent)")
    ap.add_argument("--clips", help=f"comma-separated subset of {','.join(CLIP_NAMES)} (with --report-from: "
                                    f"report only these)")
    ap.add_argument("--frames", type=int, help="input frames per clip (overrides the profile)")
    ap.add_argument("--methods",
                    help="comma-separated subset, e.g. repeat,dedup,plain,n2,n2c,n3,n3c (nNc: compensated)")
    ap.add_argument("--size", default="512x288", help="WxH (default 512x288)")
    ap.add_argument("--fps", default="60", help="target frame rate (input is 24000/1001)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 on a busy machine)")
    ap.add_argument("--out", default="bench/results/cadence.json", help="result file (JSON)")
    ap.add_argument("--resume", action="store_true", help="keep results already in --out and skip them")
    ap.add_argument("--report-from", help="comma-separated result files: print their tables (and plot), run nothing")
    ap.add_argument("--plot", help="write the judder/PSNR plot to this PNG")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                    help="arithmetic of the model calls (default fp32; results are kept per precision)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report_from:
        files = [json.loads(Path(p).read_text()) for p in args.report_from.split(",")]
        clips = set(args.clips.split(",")) if args.clips else None
        data = {"machine": files[0]["machine"],
                "results": [r for f in files for r in f["results"] if clips is None or r["clip"] in clips]}
    else:
        profile = plans("quick" if args.quick else "full" if args.full else "default")
        if args.models:
            wanted = args.models.split(",")
            profile = {m: p for m, p in profile.items() if m in wanted}
            for m in wanted:
                profile.setdefault(m, plans("default")["gmfss"])
        if args.clips or args.frames or args.methods:
            methods = tuple(method_from_code(c) for c in args.methods.split(",")) if args.methods else None
            profile = {m: ModelPlan(tuple(args.clips.split(",")) if args.clips else p.clips, args.frames or p.frames,
                                    methods or p.methods) for m, p in profile.items()}
        results = ResultFile(out, args.resume)
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        with BenchWeights(log) as weights:
            run(profile, parse_size(args.size), Fraction(args.fps), results, shift_grid(-0.5, 3.0, 0.25), log, weights,
                precision=args.precision)
        data = results.data
    print(report(data))
    if args.plot:
        plot_cadence(data["results"], Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
