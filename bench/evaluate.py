"""Score one method's output on one clip against the clip's ideal frames and ideal motion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np

from .metrics import SSIM, fit_shift
from .synthetic import Clip
from .tracking import Sighting, best_lag, judder, track_colour

LAG_GRID = [round(-1.0 + 0.05 * i, 2) for i in range(101)]  # -1 .. 4 input frames


class IdealFrames:
    """The ideal frames (and the tracker's view of them) of one clip, rendered once and shared by all methods."""

    def __init__(self, clip: Clip) -> None:
        self.clip = clip
        self._frames: dict[float, np.ndarray] = {}
        self._sightings: dict[tuple[str, float], Sighting | None] = {}

    def __call__(self, t: float) -> np.ndarray:
        key = round(t, 9)
        if key not in self._frames:
            self._frames[key] = self.clip.ideal_frame(key)
        return self._frames[key]

    def sighting(self, name: str, t: float) -> Sighting | None:
        key = (name, round(t, 9))
        if key not in self._sightings:
            self._sightings[key] = track_colour(self(t), self.clip.character(name).colour)
        return self._sightings[key]


@dataclass
class CharacterScore:
    name: str
    hold: int
    judder_px: float
    lag_frames: float
    position_rms_px: float
    coverage: float
    pairs: int
    lost: int


@dataclass
class ClipScore:
    psnr: float
    ssim: float
    best_shift: float
    psnr_at_best: float
    ssim_at_best: float
    psnr_by_shift: dict[float, float]
    frames_scored: int
    characters: list[CharacterScore]

    def to_json(self) -> dict:
        d = asdict(self)
        d["psnr_by_shift"] = {str(k): v for k, v in self.psnr_by_shift.items()}
        return d


def output_times(clip: Clip, out_fps: Fraction, count: int) -> list[float]:
    """Input-frame time of each output frame that lies within the input (t <= last input frame)."""
    step = clip.fps / Fraction(out_fps)
    return [float(k * step) for k in range(count) if k * step <= clip.n_frames - 1]


def tracker_bias(clip: Clip, name: str, times: Sequence[float], ideal: IdealFrames) -> tuple[float, float]:
    """Mean offset between the tracker's reading of the ideal frames and the analytic patch centroid.

    Anti-aliased edges bias a colour centroid by a few tenths of a pixel; adding this bias to the
    analytic path makes lags and position errors measure the method, not the tracker.
    """
    home = clip.shot_of(name)
    d = [(s.x - m[0], s.y - m[1]) for t in times if clip.shot_at(t) is home
         for s, m in [(ideal.sighting(name, t), clip.marker_position(name, t))] if s is not None]
    return (float(np.mean([v[0] for v in d])), float(np.mean([v[1] for v in d]))) if d else (0.0, 0.0)


def score_characters(clip: Clip, frames: Sequence[np.ndarray], times: Sequence[float],
                     ideal: IdealFrames) -> list[CharacterScore]:
    """Judder, lag, position error and coverage of every character, tracked by its colour."""
    shot_index = [clip.shots.index(clip.shot_at(t)) for t in times]
    scores = []
    for c in clip.characters:
        home = clip.shots.index(clip.shot_of(c.name))
        bx, by = tracker_bias(clip, c.name, times, ideal)

        def truth_at(t: float, n: str = c.name, bx: float = bx, by: float = by) -> tuple[float, float]:
            x, y = clip.marker_position(n, t)
            return x + bx, y + by

        measured: list[tuple[float, float] | None] = []
        truth = [truth_at(t) for t in times]
        weights, lost = [], 0
        for f, t, s in zip(frames, times, shot_index):
            if s != home:
                measured.append(None)
                continue
            seen = track_colour(f, c.colour)
            ref = ideal.sighting(c.name, t)
            if seen is None:
                lost += 1
                measured.append(None)
                weights.append(0.0)
                continue
            measured.append((seen.x, seen.y))
            if ref is not None:
                weights.append(seen.weight / ref.weight)
        # Judder up to the character's last drawing: after it the ideal path needs a drawing the input does
        # not have, and a stop, an ease or a guess there would be scored as the method's motion.
        last = clip.last_drawing_time(c.name)
        jud, pairs = judder([m if t <= last else None for m, t in zip(measured, times)], truth, shot_index)
        lag = best_lag(measured, times, truth_at, LAG_GRID)
        found = [(m, p) for m, p in zip(measured, truth) if m is not None]
        rms = math.sqrt(np.mean([(m[0] - p[0]) ** 2 + (m[1] - p[1]) ** 2 for m, p in found])) if found else math.nan
        cover = float(np.mean(weights)) if weights else math.nan
        scores.append(CharacterScore(c.name, c.hold, jud, lag, rms, cover, pairs, lost))
    return scores


def score_output(clip: Clip, frames: Sequence[np.ndarray], out_fps: Fraction, ideal: IdealFrames,
                 shifts: Sequence[float], ssim: SSIM) -> ClipScore:
    """All the picture and motion figures of one output sequence."""
    times = output_times(clip, out_fps, len(frames))
    frames = list(frames[: len(times)])
    fit = fit_shift(frames, times, ideal, shifts, ssim)
    chars = score_characters(clip, frames, times, ideal)
    return ClipScore(fit.psnr, fit.ssim, fit.best_shift, fit.psnr_at_best, fit.ssim_at_best, fit.psnr_by_shift,
                     len(frames), chars)
