"""How one video is cut into chunks that separate sessions interpolate, and which output frames each one owns.

With delay compensation every shot is independent, so a chunk may begin at a scene cut. A shot
longer than the bound is cut into pieces that overlap: in a session that starts mid-shot at
input frame ``a``, pass ``k`` holds the whole video's elements from index ``a + k`` on (each
midpoint needs its two neighbours of the pass before), so the last pass is right from ``a + n - 1``
on; a session that ends mid-shot at ``b`` (its last frame ``b - 1``, then copies of it) is right
up to the pair ``(b - 2, b - 1)``. Output step ``i`` is read from the last pass at input position
``i / r + (n - 1) / 2``. Handing over at position ``m``: the earlier piece runs to ``m + 1`` and
owns the steps before ``ceil((m - (n - 1) / 2) r)``, the later one starts at ``m - (n - 1)`` and
owns the rest -- an overlap of ``n`` input frames. Every session gets its frames' indices in the
whole video (``first_index``), so its output frames are the whole video's steps from
``ceil(first_index r)`` on; the owner keeps its range and drops the rest.

A chunk that ends at a cut also gets the cut's frame: its session then sees the cut and ends the
shot exactly as a session of the whole video does (the frames after the cut are dropped).

Keyframe re-timing (``adaptive``) looks back to where each region last changed, as far as the shot's
start, so a shot cannot be picked up mid-way: its chunks are whole shots (``split_shots=False``), and a
shot longer than the bound is one chunk of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Chunk:
    """One session's share of the video: input frames ``[start, stop)``, output steps ``[first_step, end_step)``."""

    index: int
    start: int
    stop: int
    first_step: int
    end_step: int
    ratio: Fraction

    @property
    def session_first_step(self) -> int:
        """The whole video's step of the session's first output frame."""
        return math.ceil(self.start * self.ratio)

    @property
    def skip(self) -> int:
        """Output frames of the session before the ones this chunk owns."""
        return self.first_step - self.session_first_step

    @property
    def frames_out(self) -> int:
        return self.end_step - self.first_step


def lead_in(n_pass: int) -> int:
    """Frames before the handover a later piece starts with: ``n - 1`` for the values to be the whole video's, and
    ``2 (n - 1)`` more so that every model call they depend on runs in a batch of the same make-up (all passes at
    work, all on right values) as in a session of the whole video: batched float arithmetic then rounds alike."""
    return 3 * (n_pass - 1)


def run_on(n_pass: int) -> int:
    """Frames from the handover on an earlier piece gets: its last owned step is computed in the step that pushes
    frame ``m + n - 1``, an ordinary step (the closing copies' drain would batch differently)."""
    return n_pass


def overlap_frames(n_pass: int) -> int:
    """Input frames two pieces of one shot share: ``4 n - 3``."""
    return lead_in(n_pass) + run_on(n_pass)


def smallest_bound(n_pass: int) -> int:
    """The shortest chunk bound that leaves every piece longer than the overlap."""
    return overlap_frames(n_pass) + 1


def total_steps(n_frames: int, ratio: Fraction) -> int:
    """The output frames of a whole video of ``n_frames`` (the engine's count: the last interval closed)."""
    return math.ceil(n_frames * ratio) + 1 if n_frames else 0


def spread_cuts(n_frames: int, cuts: list[int], jobs: int) -> set[int]:
    """The cuts that share the video out into ``jobs`` runs of shots as even as the cuts allow: for each of the
    ``jobs - 1`` even split points, the nearest cut not taken yet (after the one taken before)."""
    chosen: list[int] = []
    for j in range(1, jobs):
        ideal = Fraction(j * n_frames, jobs)
        later = [c for c in cuts if not chosen or c > chosen[-1]]
        if later:
            chosen.append(min(later, key=lambda c: (abs(c - ideal), c)))
    return set(chosen)


def plan_chunks(n_frames: int, ratio: Fraction, n_pass: int, cuts: Iterable[int], max_frames: int,
                split_shots: bool = True, jobs: int = 1) -> list[Chunk]:
    """Chunks of whole shots (consecutive short shots together, up to ``max_frames``), long shots in overlapping
    pieces of at most ``max_frames`` frames each (``split_shots``; else a long shot is one chunk). ``cuts`` are
    frame indices where a shot starts: they must be cuts the engine sees too (a missed one costs nothing, a false
    one would change the output). With ``jobs`` > 1 the video is also split at the ``jobs - 1`` cuts nearest to
    an even share each (``spread_cuts``), so that a short file still makes ``jobs`` chunks where it has the cuts
    (as Av1an splits at every scene change)."""
    if split_shots and max_frames < smallest_bound(n_pass):
        raise ValueError(f"a chunk must be at least {smallest_bound(n_pass)} frames for {n_pass} passes, "
                         f"got {max_frames}")
    if n_frames <= 0:
        return []
    edges = [0] + sorted({c for c in cuts if 0 < c < n_frames}) + [n_frames]
    shared = spread_cuts(n_frames, edges[1:-1], jobs)
    bounds: list[tuple[int, bool, int]] = []  # (position, is a cut, where its shot starts)
    current = 0
    for s, e in zip(edges, edges[1:]):
        if s in shared and s > current:
            bounds.append((s, True, s))
            current = s
        if e - s > max_frames and split_shots:
            if s > current:
                bounds.append((s, True, s))
            pieces = math.ceil((e - s) / max_frames)
            bounds += [(s + (e - s) * j // pieces, False, s) for j in range(1, pieces)]
            if e < n_frames:
                bounds.append((e, True, e))
            current = e
        elif e - current > max_frames and s > current:
            bounds.append((s, True, s))
            current = s
    delay = Fraction(n_pass - 1, 2)

    def handover(position: int, cut: bool) -> int:
        return math.ceil(position * ratio) if cut else math.ceil((position - delay) * ratio)

    marks = [(0, True, 0)] + bounds + [(n_frames, True, n_frames)]
    chunks = []
    for i, ((a, a_cut, shot), (b, b_cut, _)) in enumerate(zip(marks, marks[1:])):
        # A piece may start at its shot's start (exact) but not before; running on past a cut is harmless (the
        # session sees the cut and ends the shot as the whole video's session does).
        start = a if a_cut else max(shot, a - lead_in(n_pass))
        stop = min(n_frames, b + (1 if b_cut else run_on(n_pass)))
        end_step = total_steps(n_frames, ratio) if b == n_frames else handover(b, b_cut)
        chunks.append(Chunk(i, start, stop, 0 if a == 0 else handover(a, a_cut), end_step, ratio))
    return chunks
