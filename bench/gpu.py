"""The GPU check in one command: golden cases, the cupy splatting kernel, speed and the daemon on CUDA.

    python -m multipassdedup.bench.gpu            # installed package
    python3 bench/gpu.py                          # from a checkout, without installing anything

On a CUDA machine it runs, and writes as JSON (``--out``) and as tables on stdout:

1. the golden cases (tests/golden) in fp32 and fp16, for the models whose weight files are present;
2. the cupy softmax-splatting kernel against the PyTorch path (agreement and time);
3. speed of rife and gmfss at 1280x720 and 1920x1080: n_pass 1 and 3, batches of at most 1/2/4/8
   evaluations per network call, fp32 and fp16, with peak device memory;
4. the daemon serving 1, 2 and 4 clients against as many in-process engines.

It needs only python3, torch, numpy (cupy for part 2, grpcio and protobuf for part 4; a part whose
library is missing is skipped and says so). A model whose weight files are absent runs with random
weights of its real architecture, written as user-supplied files to a temporary folder (speed does
not depend on the values; the output says so). Without CUDA it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout: make the checkout importable as multipassdedup
    _root = Path(__file__).resolve().parents[1]
    _link_dir = Path(tempfile.mkdtemp(prefix="mpd-gpu-"))
    (_link_dir / "multipassdedup").symlink_to(_root, target_is_directory=True)
    sys.path.insert(0, str(_link_dir))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_link_dir), os.environ.get("PYTHONPATH")]))
    __package__ = "multipassdedup.bench"  # what ``python -m`` would have set

import numpy as np
import torch

SIZES = ((1280, 720), (1920, 1080))
BATCHES = (1, 2, 4, 8)
PASSES = (1, 3)
PRECISIONS = ("fp32", "fp16")
CLIENTS = (1, 2, 4)
MIN_PSNR = 45.0
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# -- models: the real weights, or random ones of the same architecture ---------------------------------

def random_networks(name: str) -> dict[str, torch.nn.Module]:
    """Freshly initialised networks of model ``name`` by weight role (what its weight files would hold)."""
    from ..core.networks.gmflow import GMFlow
    from ..core.networks.gmfss_nets import FeatureNet, GridNet, MetricNet
    from ..core.networks.rife_ifnet import IFNet

    if name == "rife":
        return {"ifnet": IFNet()}
    if name == "gmfss":
        return {"flownet": GMFlow(), "ifnet": IFNet(), "metricnet": MetricNet(), "featnet": FeatureNet(),
                "fusionnet": GridNet()}
    raise ValueError(f"no random networks for {name}")


def weights_for(name: str, weights_dir: Path | None, scratch: Path) -> tuple[Path | None, bool]:
    """The weights folder to load ``name`` from, and whether its weights are real (False: random files in
    ``scratch``, in the original program's layout, which the store takes as user-supplied)."""
    from ..core.models.registry import MODELS
    from ..weights import WeightsError, WeightStore

    declared = MODELS.get(name).weights
    try:
        (WeightStore(weights_dir) if weights_dir else WeightStore()).files_for(name, declared)
        return weights_dir, True
    except WeightsError:
        pass
    torch.manual_seed(0)
    folder = scratch / declared.original_dir
    folder.mkdir(parents=True, exist_ok=True)
    for role, net in random_networks(name).items():
        torch.save(net.state_dict(), folder / declared.original_names[role].replace("*", ""))
    return scratch, False


# -- 1. golden cases -------------------------------------------------------------------------------------

def golden_rows(models: dict, log) -> list[dict]:
    """Every golden case of a model with real weights, in each precision: worst and median frame PSNR."""
    from ..core import MultiPassDedup

    rows = []
    for path in sorted(GOLDEN_DIR.glob("*.npz")):
        z = np.load(path)
        inp, ref, params = z["input"], z["output"], json.loads(str(z["params"]))
        name = params["model"]
        if name not in models or not models[name]["real"]:
            continue
        for precision, model in models[name]["by_precision"].items():
            if path.stem.startswith("pair_"):
                out = model.interpolate(inp[0], inp[1], params["ts"])
            else:
                pipe = MultiPassDedup(model, n_pass=params["n_pass"], src_fps=Fraction(params["src_fps"]),
                                      dst_fps=params["dst_fps"], times=params["times"] if params["times"] > 0 else None,
                                      scdet=bool(params["scdet"]), scdet_threshold=params["scdet_threshold"],
                                      scale=params["scale"], compensate_delay=False)
                out = [f for frame in inp for f in pipe.push(frame)] + pipe.flush()
            scores = [psnr(a, b) for a, b in zip(out, ref)] if len(out) == len(ref) else [0.0]
            rows.append({"case": path.stem, "model": name, "precision": precision, "frames": len(out),
                         "worst_db": min(scores), "median_db": float(np.median(scores)),
                         "passed": len(out) == len(ref) and min(scores) >= MIN_PSNR})
            log(f"golden {path.stem} {precision}: worst {min(scores):.2f} dB")
    return rows


# -- 2. splatting kernel -----------------------------------------------------------------------------------

def splat_rows(device: torch.device, log) -> list[dict]:
    """The cupy summation splat against the PyTorch one on frame-sized inputs: max difference and time."""
    from ..core.layers.softsplat import _CupySplatSum, splat_sum

    try:
        kernel = _CupySplatSum()
    except Exception as e:  # noqa: BLE001 - no cupy, no compiler: the PyTorch path is what runs
        log(f"splatting: cupy kernel unavailable ({e}); skipped")
        return [{"skipped": f"cupy kernel unavailable: {e}"}]
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    for w, h in SIZES:
        values = torch.rand(2, 68, h // 2, w // 2, generator=g, device=device)  # GMFSS: 4 images + 64 features
        flow = (torch.rand(2, 2, h // 2, w // 2, generator=g, device=device) - 0.5) * 40
        ref, got = splat_sum(values, flow), kernel(values, flow)
        times = {}
        for label, fn in (("pytorch", splat_sum), ("cupy", kernel)):
            fn(values, flow)
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(10):
                fn(values, flow)
            torch.cuda.synchronize(device)
            times[label] = (time.perf_counter() - start) / 10
        rows.append({"size": f"{w}x{h}", "max_abs_diff": float((ref - got).abs().max()),
                     "pytorch_ms": times["pytorch"] * 1e3, "cupy_ms": times["cupy"] * 1e3})
        log(f"splatting {w}x{h}: diff {rows[-1]['max_abs_diff']:.2e}, pytorch {rows[-1]['pytorch_ms']:.2f} ms, "
            f"cupy {rows[-1]['cupy_ms']:.2f} ms")
    return rows


# -- 3. speed ------------------------------------------------------------------------------------------------

def clip_frames(width: int, height: int, n: int) -> list[np.ndarray]:
    from .clips import make_clip

    return make_clip("mixed_pan", width, height, n).frames()


def speed_rows(models: dict, frames_in: int, log) -> list[dict]:
    """Output fps and peak device memory per model, size, precision, n_pass and batch limit."""
    from ..core import MultiPassDedup

    rows = []
    for w, h in SIZES:
        frames = clip_frames(w, h, frames_in)
        for name, entry in models.items():
            for precision, model in entry["by_precision"].items():
                align = model.alignment(1.0)
                padded = (-(-h // align) * align) * (-(-w // align) * align)
                for n_pass in PASSES:
                    for batch in BATCHES:
                        model.max_batch_pixels = batch * padded
                        opts = dict(n_pass=n_pass, src_fps=Fraction(24000, 1001), dst_fps=60)
                        warm = MultiPassDedup(model, **opts)
                        for f in frames[:3]:
                            warm.push(f)
                        warm.flush()
                        torch.cuda.synchronize(model.device)
                        torch.cuda.reset_peak_memory_stats(model.device)
                        pipe = MultiPassDedup(model, **opts)
                        start = time.perf_counter()
                        out = sum(len(pipe.push(f)) for f in frames) + len(pipe.flush())
                        torch.cuda.synchronize(model.device)
                        seconds = time.perf_counter() - start
                        rows.append({"model": name, "size": f"{w}x{h}", "precision": precision, "n_pass": n_pass,
                                     "batch": batch, "frames_out": out, "seconds": seconds, "fps": out / seconds,
                                     "peak_mb": torch.cuda.max_memory_allocated(model.device) / 2 ** 20,
                                     "real_weights": entry["real"]})
                        log(f"speed {name} {w}x{h} {precision} n_pass={n_pass} batch<={batch}: "
                            f"{out / seconds:.2f} fps, peak {rows[-1]['peak_mb']:.0f} MB")
                model.max_batch_pixels = None
    return rows


# -- 4. daemon ------------------------------------------------------------------------------------------------

def daemon_part(models: dict, frames_in: int, log) -> list[dict]:
    try:
        import grpc  # noqa: F401
        from google import protobuf  # noqa: F401
    except ImportError as e:
        log(f"daemon: {e}; skipped")
        return [{"skipped": str(e)}]
    from .speed import daemon_rows

    rows = []
    for name, entry in models.items():
        args = ("--precision", "fp16") + (("--weights-dir", str(entry["weights_dir"])) if entry["weights_dir"] else ())
        rows += daemon_rows([name], SIZES[0], 3, "mixed_pan", frames_in, list(CLIENTS), None, log,
                            device="cuda", daemon_args=args)
    return rows


# -- tables ---------------------------------------------------------------------------------------------------

def tables(data: dict) -> str:
    out = [f"GPU: {data['machine'].get('gpu')}; weights: "
           + ", ".join(f"{m} {'real' if r else 'RANDOM (speed only)'}" for m, r in data["real_weights"].items())]
    out += ["", "| golden case | precision | frames | worst dB | median dB | >= 45 dB |", "|" + " --- |" * 6]
    out += [f"| {r['case']} | {r['precision']} | {r['frames']} | {r['worst_db']:.2f} | {r['median_db']:.2f} "
            f"| {'yes' if r['passed'] else 'NO'} |" for r in data["golden"]]
    out += ["", "| splat size | max abs diff | pytorch ms | cupy ms |", "|" + " --- |" * 4]
    out += [f"| {r['size']} | {r['max_abs_diff']:.2e} | {r['pytorch_ms']:.2f} | {r['cupy_ms']:.2f} |"
            for r in data["splatting"] if "size" in r]
    out += ["", "| model | size | precision | n_pass | batch <= | output fps | peak MB |", "|" + " --- |" * 7]
    out += [f"| {r['model']} | {r['size']} | {r['precision']} | {r['n_pass']} | {r['batch']} | {r['fps']:.2f} "
            f"| {r['peak_mb']:.0f} |" for r in data["speed"]]
    daemon = [r for r in data["daemon"] if "mode" in r]
    if daemon:
        from .speed import daemon_table

        out += ["", daemon_table(daemon)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m multipassdedup.bench.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/gpu.json", help="results as JSON (default %(default)s)")
    ap.add_argument("--weights-dir", type=Path, help="weights folder (default: the weight store)")
    ap.add_argument("--models", default="rife,gmfss", help="comma-separated models (default %(default)s)")
    ap.add_argument("--frames", type=int, default=12, help="input frames per speed run (default %(default)s)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: golden, splatting, speed, daemon")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.gpu: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to measure")
        return 0
    from ..core import load_model
    from ..core.precision import PrecisionChoice
    from .machine import describe

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    skip = set(filter(None, args.skip.split(",")))
    device = torch.device("cuda")
    scratch = Path(tempfile.mkdtemp(prefix="mpd-gpu-weights-"))
    models = {}
    for name in args.models.split(","):
        folder, real = weights_for(name, args.weights_dir, scratch / name)
        if not real:
            log(f"{name}: weight files absent; random weights of the real architecture (speed only, no golden cases)")
        base = load_model(name, device=device, weights_dir=folder, precision="fp32")
        models[name] = {"real": real, "weights_dir": folder,
                        "by_precision": {"fp32": base, "fp16": base.with_precision(PrecisionChoice("fp16", "bench"))}}
    data = {"machine": describe(), "real_weights": {n: m["real"] for n, m in models.items()},
            "golden": [] if "golden" in skip else golden_rows(models, log),
            "splatting": [] if "splatting" in skip else splat_rows(device, log),
            "speed": [] if "speed" in skip else speed_rows(models, args.frames, log),
            "daemon": [] if "daemon" in skip else daemon_part(models, args.frames, log)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(tables(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
