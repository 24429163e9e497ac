"""The GPU check in one command: golden cases, the cupy splatting kernel, speed and the daemon on CUDA.

    python -m multipassdedup.bench.gpu            # installed package
    python3 bench/gpu.py                          # from a checkout, without installing anything
    python3 bench/gpu.py --rehearse               # every part on the CPU at a small size, before a GPU is lent

On a CUDA machine it runs, and writes as JSON (``--out``, rewritten after each part) and as tables on stdout:

1. the golden cases (tests/golden) in fp32 and fp16, for the models whose weight files are present, and the
   GIMM cases with their synthetic weights (regenerated from the spec in tests/golden/gimm);
2. for a model whose weight files are absent: its CUDA output against its CPU fp32 output on the golden
   pairs' frames, with the same random weights (the CUDA code paths, not the weights, are under test);
3. the cupy softmax-splatting kernel against the PyTorch path (agreement and time);
4. speed of rife and gmfss at 1280x720 and 1920x1080: n_pass 1 and 3, batches of at most 1/2/4/8
   evaluations per network call, fp32 and fp16, with peak device memory;
5. the daemon serving 1, 2 and 4 clients against as many in-process engines.

It needs only python3, torch, numpy (cupy for part 3, grpcio, grpcio-health-checking, grpcio-reflection and
protobuf for part 5; a part whose library is missing is skipped and says so). A part that fails is recorded
with its error and the others still run. A model whose weight files are absent runs with random weights of
its real architecture, written as user-supplied files to a temporary folder (speed does not depend on the
values; the output says so). Without CUDA it says so in one line and exits 0; ``--rehearse`` then runs the
same parts on the CPU, small and short (bf16 for fp16, no splatting kernel), to show the command works.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
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

from .metrics import psnr

MIN_PSNR = 45.0
GIMM_MAX_MAE = 1e-3  # the GIMM cases' criterion on the float output (tests/golden/gimm/README.md)
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"
PARTS = ("golden", "gimm", "cross_device", "splatting", "speed", "daemon")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What the check runs: on CUDA the real sizes; a rehearsal the same parts on the CPU, small and short."""

    device: torch.device
    sizes: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080))
    batches: tuple[int, ...] = (1, 2, 4, 8)
    passes: tuple[int, ...] = (1, 3)
    reduced: str = "fp16"  # the precision set beside fp32
    clients: tuple[int, ...] = (1, 2, 4)
    frames: int = 12

    @classmethod
    def rehearsal(cls, frames: int) -> Plan:
        return cls(torch.device("cpu"), sizes=((256, 128),), batches=(1, 2), passes=(1,), reduced="bf16",
                   clients=(1,), frames=min(frames, 6))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak_memory(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2 ** 20 if self.cuda else None


def quantised(x: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] as the uint8 frame it rounds to."""
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


# -- models: the real weights, or random ones of the same architecture ---------------------------------

def random_networks(name: str) -> dict[str, torch.nn.Module]:
    """Networks of model ``name`` by weight role (what its weight files would hold), every tensor set to the
    synthetic weights' values (``bench.synthetic_weights``: seeded per key, the same on every machine and
    torch version, so a CPU and a GPU run of them agree)."""
    from ..core.networks.gmflow import GMFlow
    from ..core.networks.gmfss_nets import FeatureNet, GridNet, MetricNet
    from ..core.networks.rife_ifnet import IFNet
    from .synthetic_weights import synthetic_tensor

    if name == "rife":
        nets = {"ifnet": IFNet()}
    elif name == "gmfss":
        nets = {"flownet": GMFlow(), "ifnet": IFNet(), "metricnet": MetricNet(), "featnet": FeatureNet(),
                "fusionnet": GridNet()}
    else:
        raise ValueError(f"no random networks for {name}")
    for role, net in nets.items():
        state = {k: synthetic_tensor(f"{role}.{k}", list(v.shape), str(v.dtype).removeprefix("torch."))
                 for k, v in net.state_dict().items()}
        net.load_state_dict(state)
    return nets


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
    folder = scratch / declared.original_dir
    folder.mkdir(parents=True, exist_ok=True)
    for role, net in random_networks(name).items():
        torch.save(net.state_dict(), folder / declared.original_names[role].replace("*", ""))
    return scratch, False


def golden_pairs(model: str) -> list[Path]:
    return sorted(GOLDEN_DIR.glob(f"pair_{model}_*.npz"))


# -- 1. golden cases -------------------------------------------------------------------------------------

def golden_rows(models: dict, plan: Plan, log: Log) -> list[dict]:
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
            start = time.perf_counter()
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
                         "passed": bool(len(out) == len(ref) and min(scores) >= MIN_PSNR),
                         "seconds": time.perf_counter() - start})
            log(f"golden {path.stem} {precision}: worst {min(scores):.2f} dB")
    return rows


def gimm_rows(plan: Plan, scratch: Path, log: Log) -> list[dict]:
    """The GIMM cases on their synthetic weights: mean absolute error of the float output and PSNR after
    quantising, per precision the model runs in."""
    from ..core import load_model
    from ..core.precision import PrecisionChoice
    from .synthetic_weights import synthetic_state_dict, write_gimm_user_files

    spec = json.loads((GOLDEN_DIR / "gimm" / "gimm_state_dict_spec.json").read_text())
    layout = [(k, list(shape), dtype) for k, shape, dtype in spec["tensors"]]
    write_gimm_user_files(scratch, synthetic_state_dict(layout, float(spec["gain"])))
    base = load_model("gimm", device=plan.device, weights_dir=scratch, precision="fp32")
    rows = []
    for precision in ("fp32", plan.reduced):
        if precision not in base.precisions:
            rows.append({"model": "gimm", "precision": precision,
                         "skipped": f"gimm runs in {'/'.join(base.precisions)}"})
            log(f"gimm {precision}: not a precision it runs in; skipped")
            continue
        model = base if precision == "fp32" else base.with_precision(PrecisionChoice(precision, "bench"))
        for path in sorted((GOLDEN_DIR / "gimm").glob("pair_gimm_*.npz")):
            z = np.load(path)
            ts = json.loads(str(z["params"]))["ts"]
            x, y = (model.to_tensor(f) for f in z["input"])
            floats = model.interpolate_tensors(x, y, ts)
            maes, dbs = [], []
            for got, ref in zip(floats, z["output_float"]):
                rgb = got[0].float().flip(0).cpu().numpy()  # the network works in BGR
                maes.append(float(np.abs(rgb - ref).mean()))
                dbs.append(psnr(quantised(rgb), quantised(ref)))
            rows.append({"case": path.stem, "model": "gimm", "precision": precision, "worst_mae": max(maes),
                         "worst_db": min(dbs), "passed": bool(max(maes) <= GIMM_MAX_MAE and min(dbs) >= MIN_PSNR)})
            log(f"gimm {path.stem} {precision}: worst MAE {max(maes):.2e}, worst {min(dbs):.2f} dB")
    return rows


# -- 2. CUDA against the CPU, for models on random weights --------------------------------------------------

def cross_device_rows(models: dict, plan: Plan, log: Log) -> list[dict]:
    """A model without its weight files: the golden pairs' frames through it on this device (each precision)
    against its CPU fp32 output, the same random weights on both."""
    from ..core import load_model

    rows = []
    for name, entry in models.items():
        if entry["real"] or not plan.cuda:
            continue
        cpu = load_model(name, device="cpu", weights_dir=entry["weights_dir"], precision="fp32")
        for path in golden_pairs(name):
            z = np.load(path)
            inp, ts = z["input"], json.loads(str(z["params"]))["ts"]
            ref = cpu.interpolate(inp[0], inp[1], ts)
            for precision, model in entry["by_precision"].items():
                scores = [psnr(a, b) for a, b in zip(model.interpolate(inp[0], inp[1], ts), ref)]
                rows.append({"case": path.stem, "model": name, "precision": precision, "worst_db": min(scores)})
                log(f"{name} {path.stem} {precision}: against its CPU fp32 output, worst {min(scores):.2f} dB")
    return rows


# -- 3. splatting kernel -----------------------------------------------------------------------------------

def splat_rows(plan: Plan, log: Log) -> list[dict]:
    """The cupy summation splat against the PyTorch one on frame-sized inputs: max difference and time."""
    from ..core.layers.softsplat import _CupySplatSum, splat_sum

    if not plan.cuda:
        log("splatting: the cupy kernel runs on CUDA only; skipped")
        return [{"skipped": "the cupy kernel runs on CUDA only"}]
    try:
        kernel = _CupySplatSum()
    except Exception as e:  # noqa: BLE001 - no cupy, no compiler: the PyTorch path is what runs
        log(f"splatting: cupy kernel unavailable ({e}); skipped")
        return [{"skipped": f"cupy kernel unavailable: {e}"}]
    rows = []
    g = torch.Generator(device=plan.device).manual_seed(0)
    for w, h in plan.sizes:
        values = torch.rand(2, 68, h // 2, w // 2, generator=g, device=plan.device)  # GMFSS: 4 images + 64 features
        flow = (torch.rand(2, 2, h // 2, w // 2, generator=g, device=plan.device) - 0.5) * 40
        ref, got = splat_sum(values, flow), kernel(values, flow)
        times = {}
        for label, fn in (("pytorch", splat_sum), ("cupy", kernel)):
            fn(values, flow)
            plan.sync()
            start = time.perf_counter()
            for _ in range(10):
                fn(values, flow)
            plan.sync()
            times[label] = (time.perf_counter() - start) / 10
        rows.append({"size": f"{w}x{h}", "max_abs_diff": float((ref - got).abs().max()),
                     "pytorch_ms": times["pytorch"] * 1e3, "cupy_ms": times["cupy"] * 1e3})
        log(f"splatting {w}x{h}: diff {rows[-1]['max_abs_diff']:.2e}, pytorch {rows[-1]['pytorch_ms']:.2f} ms, "
            f"cupy {rows[-1]['cupy_ms']:.2f} ms")
    return rows


# -- 4. speed ------------------------------------------------------------------------------------------------

def clip_frames(width: int, height: int, n: int) -> list[np.ndarray]:
    from .clips import make_clip

    return make_clip("mixed_pan", width, height, n).frames()


def speed_rows(models: dict, plan: Plan, log: Log) -> list[dict]:
    """Output fps and peak device memory per model, size, precision, n_pass and batch limit."""
    from ..core import MultiPassDedup

    rows = []
    for w, h in plan.sizes:
        frames = clip_frames(w, h, plan.frames)
        for name, entry in models.items():
            for precision, model in entry["by_precision"].items():
                align = model.alignment(1.0)
                padded = (-(-h // align) * align) * (-(-w // align) * align)
                for n_pass in plan.passes:
                    for batch in plan.batches:
                        model.max_batch_pixels = batch * padded
                        opts = dict(n_pass=n_pass, src_fps=Fraction(24000, 1001), dst_fps=60)
                        warm = MultiPassDedup(model, **opts)
                        for f in frames[:3]:
                            warm.push(f)
                        warm.flush()
                        plan.sync()
                        plan.reset_peak_memory()
                        pipe = MultiPassDedup(model, **opts)
                        start = time.perf_counter()
                        out = sum(len(pipe.push(f)) for f in frames) + len(pipe.flush())
                        plan.sync()
                        seconds = time.perf_counter() - start
                        rows.append({"model": name, "size": f"{w}x{h}", "precision": precision, "n_pass": n_pass,
                                     "batch": batch, "frames_out": out, "seconds": seconds, "fps": out / seconds,
                                     "peak_mb": plan.peak_memory_mb(), "real_weights": entry["real"]})
                        log(f"speed {name} {w}x{h} {precision} n_pass={n_pass} batch<={batch}: "
                            f"{out / seconds:.2f} fps" + (f", peak {rows[-1]['peak_mb']:.0f} MB" if plan.cuda else ""))
                model.max_batch_pixels = None
    return rows


# -- 5. daemon ------------------------------------------------------------------------------------------------

def daemon_part(models: dict, plan: Plan, log: Log) -> list[dict]:
    try:
        import grpc  # noqa: F401
        import grpc_health.v1  # noqa: F401
        import grpc_reflection.v1alpha  # noqa: F401
        from google import protobuf  # noqa: F401
    except ImportError as e:
        log(f"daemon: {e}; skipped")
        return [{"skipped": str(e)}]
    from .speed import daemon_rows

    rows = []
    for name, entry in models.items():
        args = ("--precision", plan.reduced) + (("--weights-dir", str(entry["weights_dir"]))
                                               if entry["weights_dir"] else ())
        rows += daemon_rows([name], plan.sizes[0], 3, "mixed_pan", plan.frames, list(plan.clients), None, log,
                            device=plan.device.type, daemon_args=args)
    return rows


# -- tables ---------------------------------------------------------------------------------------------------

def _plain(value: object) -> object:
    """A NumPy scalar as the Python number it holds (for the JSON file)."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def tables(data: dict) -> str:
    out = [f"GPU: {data['machine'].get('gpu')}; weights: "
           + ", ".join(f"{m} {'real' if r else 'RANDOM (speed and CUDA-against-CPU only)'}"
                       for m, r in data["real_weights"].items())]
    out += [f"part {name} FAILED: {error}" for name, error in data["errors"].items()]
    out += ["", "| golden case | precision | frames | worst dB | median dB | >= 45 dB |", "|" + " --- |" * 6]
    out += [f"| {r['case']} | {r['precision']} | {r['frames']} | {r['worst_db']:.2f} | {r['median_db']:.2f} "
            f"| {'yes' if r['passed'] else 'NO'} |" for r in data["golden"]]
    out += ["", "| GIMM case (synthetic weights) | precision | worst MAE | worst dB | passed |", "|" + " --- |" * 5]
    out += [f"| {r['case']} | {r['precision']} | {r['worst_mae']:.2e} | {r['worst_db']:.2f} "
            f"| {'yes' if r['passed'] else 'NO'} |" for r in data["gimm"] if "case" in r]
    out += ["", "| model (random weights) | pair | precision | worst dB against CPU fp32 |", "|" + " --- |" * 4]
    out += [f"| {r['model']} | {r['case']} | {r['precision']} | {r['worst_db']:.2f} |" for r in data["cross_device"]]
    out += ["", "| splat size | max abs diff | pytorch ms | cupy ms |", "|" + " --- |" * 4]
    out += [f"| {r['size']} | {r['max_abs_diff']:.2e} | {r['pytorch_ms']:.2f} | {r['cupy_ms']:.2f} |"
            for r in data["splatting"] if "size" in r]
    out += ["", "| model | size | precision | n_pass | batch <= | output fps | peak MB |", "|" + " --- |" * 7]
    out += [f"| {r['model']} | {r['size']} | {r['precision']} | {r['n_pass']} | {r['batch']} | {r['fps']:.2f} "
            f"| {_mb(r['peak_mb'])} |" for r in data["speed"]]
    daemon = [r for r in data["daemon"] if "mode" in r]
    if daemon:
        from .speed import daemon_table

        out += ["", daemon_table(daemon)]
    return "\n".join(out)


def load_models(names: list[str], plan: Plan, weights_dir: Path | None, scratch: Path, log: Log) -> dict:
    from ..core import load_model
    from ..core.precision import PrecisionChoice

    models = {}
    for name in names:
        folder, real = weights_for(name, weights_dir, scratch / name)
        if not real:
            log(f"{name}: weight files absent; random weights of the real architecture (speed and CUDA against "
                "CPU only, no golden cases)")
        base = load_model(name, device=plan.device, weights_dir=folder, precision="fp32")
        models[name] = {"real": real, "weights_dir": folder,
                        "by_precision": {"fp32": base,
                                         plan.reduced: base.with_precision(PrecisionChoice(plan.reduced, "bench"))}}
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m multipassdedup.bench.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/gpu.json", help="results as JSON (default %(default)s)")
    ap.add_argument("--weights-dir", type=Path, help="weights folder (default: the weight store)")
    ap.add_argument("--models", default="rife,gmfss", help="comma-separated models (default %(default)s)")
    ap.add_argument("--frames", type=int, default=12, help="input frames per speed run (default %(default)s)")
    ap.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(PARTS)}")
    ap.add_argument("--rehearse", action="store_true",
                    help="without CUDA, run every part on the CPU, small and short, to show the command works")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(PARTS):
        ap.error(f"--skip: unknown part(s) {', '.join(sorted(skip - set(PARTS)))}; the parts are {', '.join(PARTS)}")
    if torch.cuda.is_available():
        plan = Plan(torch.device("cuda"), frames=args.frames)
    elif args.rehearse:
        plan = Plan.rehearsal(args.frames)
    else:
        print("bench.gpu: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to measure")
        return 0
    from .machine import describe

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    scratch = Path(tempfile.mkdtemp(prefix="mpd-gpu-weights-"))
    models = load_models(args.models.split(","), plan, args.weights_dir, scratch, log)
    data = {"machine": describe(), "rehearsal": not plan.cuda,
            "real_weights": {n: m["real"] for n, m in models.items()}, "errors": {}, "seconds": {},
            **{part: [] for part in PARTS}}
    runs = {"golden": lambda: golden_rows(models, plan, log), "gimm": lambda: gimm_rows(plan, scratch / "gimm", log),
            "cross_device": lambda: cross_device_rows(models, plan, log), "splatting": lambda: splat_rows(plan, log),
            "speed": lambda: speed_rows(models, plan, log), "daemon": lambda: daemon_part(models, plan, log)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        if part in skip:
            continue
        start = time.perf_counter()
        try:
            data[part] = runs[part]()
        except Exception as e:  # noqa: BLE001 - one part failing must not lose the others' figures
            data["errors"][part] = f"{type(e).__name__}: {e}"
            log(f"part {part} failed:\n{traceback.format_exc()}")
        data["seconds"][part] = round(time.perf_counter() - start, 1)
        log(f"part {part}: {data['seconds'][part]} s")
        out.write_text(json.dumps(data, indent=1, default=_plain))
    print(tables(data))
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
