"""Speed benchmark: output frames per second, model calls per output frame and peak memory.

    python -m multipassdedup.bench.speed                      # engine: straightforward vs optimised
    python -m multipassdedup.bench.speed --precisions fp32,auto   # and in the precision auto picks here
    python -m multipassdedup.bench.speed --daemon --clients 1,2,4 --models rife --sizes 256x128

Every configuration runs in its own process (so its peak resident memory is its own), one after
the other; the straightforward and the optimised pipeline of a model and size run back to back,
so their ratio comes from one run under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .synthetic_weights import BenchWeights

SRC_FPS = Fraction(24000, 1001)
DST_FPS = Fraction(60)
VARIANTS = ("straightforward", "optimised")


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# Input frames of the straightforward-vs-optimised comparison, at least: shorter runs mislead (with 24 and 12
# frames the same comparison gave anything from 1.14x to 1.86x on one quiet machine within an hour: the first
# calls' one-off costs and the pipelines' fill and drain weigh too much in them).
MIN_ENGINE_FRAMES = {"rife": 48, "gmfss": 16}


def engine_frames(model: str, width: int) -> int:
    """Input frames per run of the engine comparison: ``MIN_ENGINE_FRAMES`` (``default_frames`` for others)."""
    return MIN_ENGINE_FRAMES.get(model) or default_frames(model, width)


def default_frames(model: str, width: int) -> int:
    """Input frames per run: enough for a steady state, few enough for gmfss and gimm at 640x360 on a CPU."""
    if model == "gimm":
        return 4 if width > 320 else 8
    if model == "gmfss":
        return 6 if width > 320 else 10
    return 12 if width > 320 else 24


class OneCallAtATime:
    """A model proxy that evaluates every (pair, t) in its own network call, as the reference program did.

    Together with ``wavefront=False`` and ``skip_duplicates=False`` (and GMFSS's per-frame cache
    off) this is the straightforward pipeline the optimised one is measured against.
    """

    def __init__(self, model) -> None:
        self.inner = model

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def interpolate_batch(self, requests, scale: float = 1.0):
        from ..core.models.base import PairRequest

        return [[self.inner.interpolate_batch([PairRequest(r.x, r.y, [t])], scale)[0][0] for t in r.ts]
                for r in requests]


# -- workers (each runs in a fresh process) ---------------------------------------------------------

def _load_frames(cfg: dict) -> list:
    from .clips import make_clip

    return make_clip(cfg["clip"], cfg["width"], cfg["height"], cfg["frames"]).frames()


READY = "ready"  # a worker's first line once it is ready to time; it then waits for a line on stdin


def _wait_for_start(cfg: dict) -> None:
    """With ``cfg["barrier"]``: say ready and wait for the parent's go, so concurrent workers start timing
    together however long each took to load (a fixed delay was too short on a busy CPU, wasted on a GPU)."""
    if cfg.get("barrier"):
        print(READY, flush=True)
        sys.stdin.readline()


def engine_worker(cfg: dict) -> dict:
    """Run the in-process engine over a synthetic clip and report throughput, counters and memory."""
    import torch

    from ..core import MultiPassDedup, load_model

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    model = load_model(cfg["model"], device=cfg.get("device", "cpu"), precision=cfg.get("precision", "fp32"),
                       weights_dir=cfg.get("weights_dir"))
    requested = cfg.get("precision", "fp32")
    if cfg.get("channels_last") is not None:
        model.use_channels_last(cfg["channels_last"])
    straightforward = cfg["variant"] == "straightforward"
    if hasattr(model, "cache_frame_features"):
        model.cache_frame_features = not straightforward
    engine_model = OneCallAtATime(model) if straightforward else model
    frames = _load_frames(cfg)
    options = dict(n_pass=cfg["n_pass"], src_fps=SRC_FPS, dst_fps=DST_FPS, scdet=True,
                   wavefront=not straightforward, skip_duplicates=not straightforward,
                   adaptive=cfg.get("adaptive", False))
    loaded_mb = peak_rss_mb()
    warm = MultiPassDedup(engine_model, **options)  # first calls allocate; keep them out of the timing
    for f in frames[:3]:
        warm.push(f)
    warm.flush()
    before = model.stats.snapshot()
    if torch.cuda.is_available() and model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _wait_for_start(cfg)
    pipe = MultiPassDedup(engine_model, **options)
    result = _stream(pipe, frames)
    after = model.stats.snapshot()
    result |= {"pipeline": pipe.stats.snapshot(), "model_stats": {k: after[k] - before[k] for k in after},
               "precision": model.precision, "requested_precision": requested, "channels_last": model.channels_last,
               "loaded_rss_mb": loaded_mb, "peak_rss_mb": peak_rss_mb()}
    if torch.cuda.is_available() and model.device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def client_worker(cfg: dict) -> dict:
    """One client streaming a synthetic clip through a running daemon."""
    from ..client.remote.session import RemoteEngine

    frames = _load_frames(cfg)
    _wait_for_start(cfg)
    engine = RemoteEngine(cfg["address"], model=cfg["model"], n_pass=cfg["n_pass"], src_fps=SRC_FPS,
                          dst_fps=DST_FPS, scdet=True, compensate_delay=False, adaptive=cfg.get("adaptive", False))
    return _stream(engine, frames) | {"pipeline": engine.stats.snapshot(), "peak_rss_mb": peak_rss_mb()}


def _stream(engine, frames: list) -> dict:
    """Push every frame through ``engine`` (in-process or remote) and flush; output count and timing."""
    start = time.perf_counter()
    cpu_start = time.process_time()
    wall_start = time.time()
    out = 0
    for f in frames:
        out += len(engine.push(f))
    out += len(engine.flush())
    # CPU time of this process: on a shared machine a steadier measure of the work than the wall clock.
    return {"frames_out": out, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
            "wall_start": wall_start, "wall_end": time.time()}


WORKERS = {"engine": engine_worker, "client": client_worker}


# -- the parent: spawn workers, collect, tabulate ------------------------------------------------------

def spawn(cfg: dict, threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "multipassdedup.bench.speed", "--worker", json.dumps(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def collect(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_concurrently(cfgs: list[dict], threads: int | None) -> list[dict]:
    """Start the workers, wait until every one is ready (loaded, clip rendered, warmed up), then let them all
    begin timing at once."""
    procs = [spawn({**c, "barrier": True}, threads) for c in cfgs]
    try:
        for proc in procs:
            while (line := proc.stdout.readline()) and line.strip() != READY:
                pass  # anything a library printed first; at the end of its output it has failed: collect says why
        for proc in procs:
            if proc.poll() is None:
                proc.stdin.write("go\n")
                proc.stdin.flush()
        return [collect(p) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    """An ``mpd-daemon`` subprocess on a loopback port."""

    proc: subprocess.Popen
    address: str

    @classmethod
    def start(cls, models: str, threads: int | None, timeout: float = 180.0, device: str = "cpu",
              extra: tuple[str, ...] = (), weights_dir: str | None = None) -> Daemon:
        from ..client.remote.session import probe

        port = free_port()
        address = f"127.0.0.1:{port}"
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        proc = subprocess.Popen([sys.executable, "-m", "multipassdedup.daemon.main", "--listen", address,
                                 "--device", device, "--models", models, "--log-level", "warning", *extra]
                                + (["--threads", str(threads)] if threads else [])
                                + (["--weights-dir", weights_dir] if weights_dir else []),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout
        while not probe(address, timeout=1.0):
            if proc.poll() is not None:
                raise RuntimeError(f"mpd-daemon exited: {proc.stderr.read().strip()[-300:]}")
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"mpd-daemon did not become healthy within {timeout:.0f} s")
            time.sleep(0.5)
        return cls(proc, address)

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def own_channels_last(model: str, precision: str) -> bool:
    """Whether ``model`` runs channels-last on a CPU in ``precision`` (auto: in what it resolves to here)."""
    import torch

    from ..core.models.registry import MODELS  # importing core.models registers them
    from ..core.precision import resolve_precision

    adapter = MODELS.get(model).adapter
    if precision != "auto" and precision not in adapter.precisions:
        return False
    resolved = resolve_precision(precision, torch.device("cpu"), adapter.precisions, adapter.auto_cpu_bf16, model)
    return resolved.precision in adapter.channels_last_in.get("cpu", ())


def engine_rows(models: list[str], sizes: list[tuple[int, int]], n_pass: int, clip: str, frames: int | None,
                threads: int | None, log, repeat: int = 1, precisions: tuple[str, ...] = ("fp32",),
                memory_formats: tuple[bool, ...] = (), straightforward: tuple[str, ...] | None = None,
                weights: BenchWeights | None = None, adaptive: bool = False) -> list[dict]:
    """Both pipelines per model and size, alternating ``repeat`` times; each keeps its fastest run.

    The optimised pipeline runs in every precision in the model's own memory format, and in each other one of
    ``memory_formats`` (channels-last on/off); the straightforward one in the ``straightforward`` precisions
    (default: all), contiguous like the reference program. Straightforward fp32 is every speed-up's reference.
    ``weights`` says where each model loads from (synthetic weights for a model whose user-supplied files are
    absent).
    """

    rows = []
    for model in models:
        loading = weights_keys(model, weights)
        for w, h in sizes:
            n = frames or engine_frames(model, w)
            if n < MIN_ENGINE_FRAMES.get(model, 0):
                log(f"{model}: {n} input frames is below the {MIN_ENGINE_FRAMES[model]} this comparison needs to be "
                    f"meaningful; its speed-ups are indicative only")
            plan = [(v, p, False if v == "straightforward" else None) for p in precisions for v in VARIANTS
                    if v == "optimised" or p in (straightforward or precisions)]
            plan += [("optimised", p, f) for p in precisions for f in memory_formats
                     if f is not None and f != own_channels_last(model, p)]
            if ("straightforward", "fp32", False) not in plan:
                plan.insert(0, ("straightforward", "fp32", False))
            runs: dict[tuple, list[dict]] = {k: [] for k in plan}
            for round_ in range(repeat):
                for variant, precision, layout in plan:
                    cfg = {"kind": "engine", "model": model, "width": w, "height": h, "frames": n, "clip": clip,
                           "n_pass": n_pass, "variant": variant, "threads": threads, "precision": precision,
                           "channels_last": layout, "adaptive": adaptive, **loading}
                    r = {**cfg, **collect(spawn(cfg, threads))}
                    log(f"{model} {w}x{h} {variant} {r['precision']}{' channels-last' if r['channels_last'] else ''} "
                        f"(run {round_ + 1}/{repeat}): {r['frames_out']} frames in {r['seconds']:.1f} s, "
                        f"{r['model_stats']['model_calls']} model calls, peak {r['peak_rss_mb']:.0f} MB")
                    runs[(variant, precision, layout)].append(r)
            for key in plan:
                fastest = min(runs[key], key=lambda r: r["seconds"])
                rows.append({**fastest, "run_seconds": [r["seconds"] for r in runs[key]],
                             "cpu_seconds": min(r["cpu_seconds"] for r in runs[key])})
    return rows


def daemon_rows(models: list[str], size: tuple[int, int], n_pass: int, clip: str, frames: int | None,
                clients: list[int], threads: int | None, log, daemon_threads: int | None = None,
                weights: BenchWeights | None = None, device: str = "cpu",
                daemon_args: tuple[str, ...] = (), adaptive: bool = False) -> list[dict]:
    """Embedded engines (one process per client) against one daemon serving that many clients.

    ``device`` and ``daemon_args`` (e.g. --weights-dir, --precision) apply to both the embedded engines and the
    daemon (the embedded engines take --weights-dir and --precision from ``daemon_args`` too); ``weights`` says
    where each model loads from.
    """
    rows = []
    w, h = size
    for model in models:
        n = frames or default_frames(model, w)
        loading = weights_keys(model, weights)
        base = {"model": model, "width": w, "height": h, "frames": n, "clip": clip, "n_pass": n_pass, "device": device,
                **_engine_options(daemon_args), **loading,
                "adaptive": adaptive}
        for k in clients:
            # Without --threads the k processes share the cores (as the daemon's one scheduler gets them all).
            each = threads or max(1, (os.cpu_count() or 1) // k)
            rs = run_concurrently([{**base, "kind": "engine", "variant": "optimised", "threads": each}] * k, each)
            rows.append(_aggregate({**base, "mode": "embedded", "clients": k}, rs, 0.0))
            log(f"{model} embedded x{k}: {rows[-1]['aggregate_fps']:.2f} fps")
        daemon = Daemon.start(model, daemon_threads or threads or os.cpu_count(), device=device, extra=daemon_args,
                              weights_dir=loading.get("weights_dir"))
        try:
            run_concurrently([{**base, "kind": "client", "address": daemon.address, "frames": 3}], threads)
            for k in clients:
                rs = run_concurrently([{**base, "kind": "client", "address": daemon.address}] * k, threads)
                rows.append(_aggregate({**base, "mode": "daemon", "clients": k}, rs, daemon.peak_rss_mb()))
                log(f"{model} daemon x{k}: {rows[-1]['aggregate_fps']:.2f} fps")
        finally:
            daemon.stop()
    return rows


def weights_keys(model: str, weights: BenchWeights | None) -> dict:
    """The row keys that say where ``model`` loads from: nothing for the weight store, else the folder of
    synthetic weights and ``synthetic_weights`` (shown in the tables)."""
    folder = weights.folder_for(model) if weights is not None else None
    return {} if folder is None else {"weights_dir": str(folder), "synthetic_weights": True}


def model_label(row: dict) -> str:
    """The model column of a table: its name, marked when it ran on synthetic weights."""
    return f"{row['model']} (synthetic weights)" if row.get("synthetic_weights") else row["model"]


def _engine_options(daemon_args: tuple[str, ...]) -> dict:
    """The --weights-dir and --precision of mpd-daemon arguments, as engine worker settings."""
    keys = {"--weights-dir": "weights_dir", "--precision": "precision"}
    return {keys[a]: v for a, v in zip(daemon_args, daemon_args[1:]) if a in keys}


def _aggregate(row: dict, results: list[dict], server_mb: float) -> dict:
    span = max(r["wall_end"] for r in results) - min(r["wall_start"] for r in results)
    frames = sum(r["frames_out"] for r in results)
    calls = sum(r["pipeline"]["model_calls"] for r in results)
    return {**row, "frames_out": frames, "seconds": span, "aggregate_fps": frames / span,
            "per_client_fps": [r["frames_out"] / r["seconds"] for r in results],
            "calls_per_frame": calls / frames, "server_mb": server_mb,
            "client_mb": [r["peak_rss_mb"] for r in results]}


# -- tables --------------------------------------------------------------------------------------------

def engine_table(rows: list[dict]) -> str:
    head = ("| model | size | pipeline | precision | output fps | model calls / output frame "
            "| frame features / output frame | batched calls | duplicate skips | peak RSS MB | speed-up "
            "| speed-up by CPU time |\n|" + " --- |" * 12)
    lines = [head]
    for r in rows:
        fps = r["frames_out"] / r["seconds"]
        ref = next(x for x in rows if x["model"] == r["model"] and x["width"] == r["width"]
                   and x["variant"] == "straightforward" and x.get("precision", "fp32") == "fp32")
        precision = r.get("precision", "fp32") + (", channels-last" if r.get("channels_last") else "")
        if r.get("requested_precision") == "auto":
            precision = f"auto: {precision}"
        by_cpu = (f"{ref['cpu_seconds'] / ref['frames_out'] / (r['cpu_seconds'] / r['frames_out']):.2f}x"
                  if "cpu_seconds" in r and "cpu_seconds" in ref else "–")
        speedup = fps / (ref["frames_out"] / ref["seconds"])
        m = r["model_stats"]
        lines.append(f"| {model_label(r)} | {r['width']}x{r['height']} | {r['variant']} | {precision} | {fps:.3f} "
                     f"| {m['model_calls'] / r['frames_out']:.2f} | {m['frame_features'] / r['frames_out']:.2f} "
                     f"| {m['batches']} | {r['pipeline']['duplicate_skips']} | {r['peak_rss_mb']:.0f} "
                     f"| {speedup:.2f}x | {by_cpu} |")
    return "\n".join(lines)


def daemon_table(rows: list[dict]) -> str:
    head = ("| model | size | mode | clients | aggregate output fps | per-client fps | model calls / output frame "
            "| daemon peak RSS MB | client peak RSS MB (each) | total MB |\n|" + " --- |" * 10)
    lines = [head]
    for r in rows:
        per = ", ".join(f"{v:.2f}" for v in r["per_client_fps"])
        clients = ", ".join(f"{v:.0f}" for v in r["client_mb"])
        server = f"{r['server_mb']:.0f}" if r["server_mb"] else "–"
        total = r["server_mb"] + sum(r["client_mb"])
        lines.append(f"| {model_label(r)} | {r['width']}x{r['height']} | {r['mode']} | {r['clients']} "
                     f"| {r['aggregate_fps']:.2f} | {per} | {r['calls_per_frame']:.2f} | {server} | {clients} "
                     f"| {total:.0f} |")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m multipassdedup.bench.speed", description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--models", default="rife,gmfss",
                    help="comma-separated models: rife, gmfss, gimm (synthetic weights when the user's are absent; "
                         "default %(default)s)")
    ap.add_argument("--sizes", default="256x128,640x360", help="comma-separated WxH (default %(default)s)")
    ap.add_argument("--n-pass", type=int, default=3, help="midpoint passes (default %(default)s)")
    ap.add_argument("--adaptive", action="store_true", help="keyframe re-timing instead of the passes")
    ap.add_argument("--clip", default="mixed_pan", help="synthetic clip (see bench/clips.py)")
    ap.add_argument("--frames", type=int,
                    help="input frames per run (default: 48 for rife and 16 for gmfss in the engine table, which "
                         "shorter runs make misleading; fewer for the daemon table and gimm)")
    ap.add_argument("--threads", type=int, help="torch threads per process (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="run both pipelines this many times, alternating, and keep each one's fastest run "
                         "(default %(default)s)")
    ap.add_argument("--precisions", default="fp32",
                    help="comma-separated precisions of the engine table (auto, fp32, bf16, fp16; auto is shown with "
                         "what it resolved to; default %(default)s)")
    ap.add_argument("--straightforward-precisions",
                    help="precisions of the straightforward pipeline (default: --precisions; fp32 always runs)")
    ap.add_argument("--memory-formats", choices=("model", "both"), default="model",
                    help="model: each model's own channels-last choice; both: also the optimised pipeline with "
                         "channels-last on and off (default %(default)s)")
    ap.add_argument("--no-engine", action="store_true", help="skip the straightforward/optimised engine table")
    ap.add_argument("--daemon", action="store_true", help="also compare embedded and daemon with --clients")
    ap.add_argument("--clients", default="1,2,4",
                    help="comma-separated numbers of concurrent clients for --daemon (default %(default)s)")
    ap.add_argument("--daemon-threads", type=int,
                    help="torch threads of the daemon (default: --threads, else one per core; without "
                         "--threads the k embedded processes get cores/k threads each)")
    ap.add_argument("--out", default="bench/results/speed.json", help="results as JSON (default %(default)s)")
    args = ap.parse_args(argv)
    if args.worker:
        cfg = json.loads(args.worker)
        print(json.dumps(WORKERS[cfg["kind"]](cfg)))
        return 0
    from .machine import describe

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    models = args.models.split(",")
    sizes = parse_sizes(args.sizes)
    data = {"machine": describe(), "threads": args.threads, "precisions": args.precisions, "clip": args.clip,
            "n_pass": args.n_pass,
            "adaptive": args.adaptive,
            "repeat": args.repeat, "daemon_threads": args.daemon_threads}
    with BenchWeights(log) as weights:
        if not args.no_engine:
            data["engine"] = engine_rows(models, sizes, args.n_pass, args.clip, args.frames, args.threads, log,
                                         max(1, args.repeat), tuple(args.precisions.split(",")),
                                         (True, False) if args.memory_formats == "both" else (),
                                         tuple(args.straightforward_precisions.split(","))
                                         if args.straightforward_precisions else None, weights,
                                         args.adaptive)
            print(engine_table(data["engine"]))
        if args.daemon:
            data["daemon"] = daemon_rows(models, sizes[0], args.n_pass, args.clip, args.frames,
                                         [int(k) for k in args.clients.split(",")], args.threads, log,
                                         args.daemon_threads, weights, adaptive=args.adaptive)
            print(daemon_table(data["daemon"]))
        data["synthetic_weights"] = weights.synthetic
    data["machine"]["load_average_last"] = describe()["load_average"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
