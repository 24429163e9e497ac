"""Markdown tables and PNG plots from the benchmark result files."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CADENCE_NAMES = {1: "ones", 2: "twos", 3: "threes", 4: "fours"}


def _fmt(v: float, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _methods_in_order(results: list[dict]) -> list[str]:
    seen: dict[str, int] = {}
    for r in results:
        seen.setdefault(r["method"], r.get("order", len(seen)))
    return sorted(seen, key=lambda m: seen[m])


def _by_cadence(rs: list[dict], field: str) -> dict[int, float]:
    values: dict[int, list[float]] = defaultdict(list)
    for r in rs:
        for c in r["score"]["characters"]:
            v = c[field]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                values[c["hold"]].append(v)
    return {h: float(np.mean(v)) for h, v in values.items()}


def summary_table(results: list[dict], model: str) -> str:
    """One row per method, averaged over the clips it ran on (counted).

    Columns: picture error, judder by cadence, model calls.
    """
    rs = [r for r in results if r["model"] == model]
    holds = sorted({c["hold"] for r in rs for c in r["score"]["characters"]})
    header = ["method", "PSNR dB", "SSIM", "PSNR dB at best shift", "SSIM at best shift"]
    header += [f"judder px, {CADENCE_NAMES.get(h, h)}" for h in holds] + ["model calls / output frame", "clips"]
    rows = []
    for m in _methods_in_order(rs):
        mr = [r for r in rs if r["method"] == m]
        jud = _by_cadence(mr, "judder_px")
        out = sum(r["frames_out"] for r in mr)
        calls = sum(r["model_calls"] for r in mr)
        rows.append([m, _fmt(np.mean([r["score"]["psnr"] for r in mr])),
                     _fmt(np.mean([r["score"]["ssim"] for r in mr]), 4),
                     _fmt(np.mean([r["score"]["psnr_at_best"] for r in mr])),
                     _fmt(np.mean([r["score"]["ssim_at_best"] for r in mr]), 4)]
                    + [_fmt(jud.get(h, math.nan)) for h in holds]
                    + [_fmt(calls / out if out else math.nan), str(len({r["clip"] for r in mr}))])
    return _table(header, rows)


def delay_table(results: list[dict], model: str) -> str:
    """Best constant shift per clip (input frames) with PSNR at zero shift -> at the best shift."""
    rs = [r for r in results if r["model"] == model]
    clips = list(dict.fromkeys(r["clip"] for r in rs))
    header = ["method"] + [f"{c}: shift (PSNR 0 → best)" for c in clips]
    rows = []
    for m in _methods_in_order(rs):
        row = [m]
        for c in clips:
            hit = [r for r in rs if r["method"] == m and r["clip"] == c]
            if not hit:
                row.append("–")
                continue
            s = hit[0]["score"]
            row.append(f"{s['best_shift']:+.2f} ({_fmt(s['psnr'], 1)} → {_fmt(s['psnr_at_best'], 1)})")
        rows.append(row)
    return _table(header, rows)


def lag_table(results: list[dict], model: str) -> str:
    """Tracked delay of the characters (input frames), by cadence, and how much of their colour survives."""
    rs = [r for r in results if r["model"] == model]
    holds = sorted({c["hold"] for r in rs for c in r["score"]["characters"]})
    header = ["method"] + [f"lag, {CADENCE_NAMES.get(h, h)}" for h in holds] + ["colour coverage", "frames lost"]
    rows = []
    for m in _methods_in_order(rs):
        mr = [r for r in rs if r["method"] == m]
        lag = _by_cadence(mr, "lag_frames")
        cov = [c["coverage"] for r in mr for c in r["score"]["characters"] if not math.isnan(c["coverage"])]
        lost = sum(c["lost"] for r in mr for c in r["score"]["characters"])
        rows.append([m] + [_fmt(lag.get(h, math.nan)) for h in holds] + [_fmt(float(np.mean(cov)) if cov else math.nan),
                                                                          str(lost)])
    return _table(header, rows)


PLAIN, N3C, ADAPTIVE = "plain (n_pass=1)", "mpd n_pass=3 +comp", "adaptive (re-timing)"
GOAL_PSNR_DB, GOAL_JUDDER, GOAL_CALLS = 0.1, 1.15, 1.15  # adaptive's goals, against the better / n_pass=3 comp


def adaptive_table(results: list[dict], model: str) -> str:
    """Per clip: plain, n_pass=3 compensated and adaptive side by side (PSNR at zero shift, judder by cadence
    with its ratio to n_pass=3 compensated, colour coverage, model calls per output frame), and for adaptive
    whether each goal is met: PSNR within 0.1 dB of the better of the two or above, judder on twos,
    threes and fours at most 1.15 x n_pass=3 compensated's, model calls at most 1.15 x. Seconds per
    output frame are as measured on the machine of the run (compare rows of one run only)."""
    rs = [r for r in results if r["model"] == model]
    header = ["clip", "method", "PSNR dB (zero shift)", "judder px by cadence (x n3c)", "colour coverage",
              "calls / output frame (x n3c)", "s / output frame", "goals: PSNR, judder, calls"]
    rows = []
    for clip in dict.fromkeys(r["clip"] for r in rs):
        found = {m: next((r for r in rs if r["clip"] == clip and r["method"] == m), None)
                 for m in (PLAIN, N3C, ADAPTIVE)}
        n3c = found[N3C]
        ref_judder = _by_cadence([n3c], "judder_px") if n3c else {}
        ref_calls = n3c["model_calls"] / n3c["frames_out"] if n3c else math.nan
        for m, r in found.items():
            if r is None:
                continue
            judder = _by_cadence([r], "judder_px")
            calls = r["model_calls"] / r["frames_out"]
            cov = [c["coverage"] for c in r["score"]["characters"] if not math.isnan(c["coverage"])]
            jtext = ", ".join(f"{h}s {_fmt(v)}" + (f" ({v / ref_judder[h]:.2f}x)" if m != N3C and h > 1
                                                   and ref_judder.get(h) else "")
                              for h, v in sorted(judder.items()))
            goals = ""
            if m == ADAPTIVE and found[PLAIN] and n3c:
                better = max(found[PLAIN]["score"]["psnr"], n3c["score"]["psnr"])
                ok_psnr = r["score"]["psnr"] >= better - GOAL_PSNR_DB
                ok_judder = all(v <= GOAL_JUDDER * ref_judder[h] for h, v in judder.items()
                                if h > 1 and h in ref_judder)
                ok_calls = calls <= GOAL_CALLS * ref_calls
                goals = ", ".join("met" if ok else "**not met**" for ok in (ok_psnr, ok_judder, ok_calls))
            rows.append([clip, m, _fmt(r["score"]["psnr"]), jtext, _fmt(float(np.mean(cov)) if cov else math.nan, 3),
                         _fmt(calls) + (f" ({calls / ref_calls:.2f}x)" if m != N3C and ref_calls == ref_calls else ""),
                         _fmt(r["seconds"] / r["frames_out"]), goals])
    return _table(header, rows)


def plot_cadence(results: list[dict], path: Path) -> None:
    """Judder by cadence and PSNR (zero and best shift) per method, one row of panels per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = plt.subplots(len(models), 2, figsize=(14, 4.6 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        rs = [r for r in results if r["model"] == model]
        methods = [m for m in _methods_in_order(rs) if m != "ideal (truth)"]
        holds = sorted({c["hold"] for r in rs for c in r["score"]["characters"]})
        x = np.arange(len(methods))
        width = 0.8 / max(1, len(holds))
        ax = row[0]
        for i, h in enumerate(holds):
            vals = [_by_cadence([r for r in rs if r["method"] == m], "judder_px").get(h, np.nan) for m in methods]
            ax.bar(x + (i - (len(holds) - 1) / 2) * width, vals, width, label=f"on {CADENCE_NAMES.get(h, h)}",
                   color=f"C{h - 1}")
        clips = ", ".join(dict.fromkeys(r["clip"] for r in rs))
        ax.set_title(f"{model} ({clips})\njudder, px (lower is smoother)", fontsize=10)
        ax.set_xticks(x, methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("px")
        ax.legend(fontsize=8)
        ax = row[1]
        p0 = [np.mean([r["score"]["psnr"] for r in rs if r["method"] == m]) for m in methods]
        pb = [np.mean([r["score"]["psnr_at_best"] for r in rs if r["method"] == m]) for m in methods]
        ax.bar(x - 0.2, p0, 0.4, label="at zero shift")
        ax.bar(x + 0.2, pb, 0.4, label="at best constant shift")
        lo = min(v for v in p0 + pb if not math.isnan(v))
        ax.set_ylim(max(0.0, lo - 3), max(v for v in p0 + pb if not math.isnan(v)) + 1.5)
        ax.set_title(f"{model} ({clips})\nPSNR against the ideal frame, dB (higher is better)", fontsize=10)
        ax.set_xticks(x, methods, rotation=35, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
