"""MultiPassDedup: n-1 passes of midpoint interpolation, then interpolation to the output frame rate.

Sequence ``P0`` is the input (plus a copy of its last frame at the end); ``Pk`` is the first
input frame followed by the midpoints of neighbouring frames of ``Pk-1``. The pairs of the last
sequence are interpolated at the output timestamps. This reproduces the reference program's
output exactly (docs/design.md §2) while scheduling the work differently: in wavefront mode every
pass advances one pair per step, so the model calls of one step are independent and run as one
batch.

Each midpoint pass shows motion half an input frame late, so the last sequence lags the input by
``(n_pass - 1) / 2`` frames. With ``compensate_delay`` the output timeline samples the last
sequence that much later, and the stream is cut into shots at scene changes so that a cut lands
at its own time (the reference moves it ``n_pass - 1`` frames later).

With ``adaptive`` the passes are replaced by keyframe re-timing (``retiming.py``): held drawings are
re-drawn region by region at their true time and everything else stays sharp; ``n_pass`` and
``compensate_delay`` do not apply (nothing is delayed; scene cuts always end a shot).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from ...settings import EngineSettings
from ..layers.frames import Padder, check_frame, to_array
from ..models.base import ModelFrame, PairInterpolator, PairRequest
from .retiming import KeyframeRetimer, held_frame_counts
from .scene import SceneDetector
from .timestamps import TimestampMapper

HALF = Fraction(1, 2)


@dataclass
class PipelineStats:
    """What one pipeline did: frames in and out, network evaluations, evaluations it avoided."""

    frames_in: int = 0
    frames_out: int = 0
    model_calls: int = 0  # interpolated frames asked of the model
    batches: int = 0  # interpolate_batch calls made
    duplicate_skips: int = 0  # evaluations skipped because the pair's frames were bit-identical
    scene_changes: int = 0  # pairs (compensated: input pairs) detected as a cut
    held_groups: int = 0  # adaptive: held regions re-drawn at their own time (one model call each)

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Element:
    """One frame of a pass sequence; ``final`` marks the last frame the sequence will ever get.

    ``closing`` marks the copies of the last input frame appended when a shot ends.
    """

    frame: ModelFrame
    final: bool = False
    closing: bool = False


class _Pass:
    """One sequence ``Pk``: its latest frame, how many pairs it has done, and frames waiting."""

    def __init__(self, first: ModelFrame) -> None:
        self.prev = first
        self.index = 0
        self.pending: deque[_Element] = deque()


class _Shot:
    """The passes over one run of input frames, and which output steps it owns.

    Reference timing uses one shot for the whole stream. ``start`` is the global index of the
    shot's first input frame; ``last_step`` is known once the shot has ended.
    """

    def __init__(self, first: ModelFrame, n_pass: int, start: int, first_step: int) -> None:
        self.passes = [_Pass(first) for _ in range(n_pass)]
        self.last = first
        self.start = start
        self.frames = 1
        self.first_step = first_step
        self.last_step: int | None = None


@dataclass
class _PairPlan:
    """How to build one pair's results: a list of 'x', 'y' or a slot filled by the model."""

    layer: int
    element: _Element
    slots: list
    request: PairRequest | None


class MultiPassDedup:
    """The streaming engine: ``push`` input frames, get output frames as soon as they exist.

    Frames are HxWx3 uint8 or uint16 RGB; outputs have the input's size and dtype. Output frame
    ``k`` has presentation time ``k / out_fps``. ``wavefront`` and ``skip_duplicates`` change how
    much work is done, not the result (beyond float rounding).
    """

    def __init__(self, model: PairInterpolator, n_pass: int = 0, src_fps: int | str | Fraction = Fraction(24000, 1001),
                 dst_fps: int | str | Fraction | None = 60, times: float | str | Fraction | None = None,
                 scdet: bool = True, scdet_threshold: float = 0.3, scale: float = 1.0,
                 compensate_delay: bool = False, wavefront: bool = True, skip_duplicates: bool = True,
                 first_index: int = 0, adaptive: bool = False) -> None:
        self.model = model
        # Every argument is checked here, once, by the settings object the daemon and clients use too.
        self.settings = EngineSettings.from_keywords(
            model=model.name or type(model).__name__, n_pass=n_pass, src_fps=src_fps, dst_fps=dst_fps, times=times,
            scdet=scdet, scdet_threshold=scdet_threshold, scale=scale, compensate_delay=compensate_delay,
            first_index=first_index, adaptive=adaptive)
        # A chunk of a longer video: its frames keep their indices there, so the output steps and shots are that
        # video's (output frame k of this stream is the video's step ceil(first_index * ratio) + k).
        self.first_index = self.settings.first_index
        self.src_fps = self.settings.require_source()
        self.ratio = self.settings.ratio
        self.n_pass = self.settings.passes
        self.out_fps = self.src_fps * self.ratio
        self.scale = self.settings.scale
        self.scene = SceneDetector(self.settings.scdet_threshold) if self.settings.scdet else None
        self.compensate_delay = self.settings.compensate_delay
        self.delay = Fraction(self.n_pass - 1, 2) if compensate_delay else Fraction(0)
        self.mapper = TimestampMapper(self.ratio)
        self.wavefront = wavefront
        self.skip_duplicates = skip_duplicates
        self.stats = PipelineStats()
        self._shot: _Shot | None = None
        self._padder: Padder | None = None
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._flushed = False
        self._retimer = KeyframeRetimer(model, self.ratio, self.scale, self.scene, lambda t: self._padder.crop(t),
                                        self._count, skip_duplicates,
                                        self.first_index) if self.settings.adaptive else None

    def memory_bound(self, height: int, width: int) -> int:
        """The most memory this pipeline holds for frames of this size, in bytes, the model's working
        memory during a call aside: ``2 n_pass + 2`` frames with their cached features (each pass
        keeps its last frame and at most one waiting), and what one step returns before the frames
        it replaces are freed: a midpoint per pass but the last, the last pass's output frames.
        Adaptive: see ``retiming.held_frame_counts``."""
        if self._retimer is not None:
            with_features, without = held_frame_counts(self.ratio)
            return (with_features * self.model.held_frame_bytes(height, width, self.scale)
                    + without * self.model.held_frame_bytes(height, width, self.scale, features=False))
        held = (2 * self.n_pass + 2) * self.model.held_frame_bytes(height, width, self.scale)
        step_outputs = (self.n_pass - 1 + math.ceil(self.ratio) + 1) * self.model.held_frame_bytes(
            height, width, self.scale, features=False)
        return held + step_outputs

    # -- input -----------------------------------------------------------------------------

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """Feed one input frame; returns the output frames that became ready (possibly none)."""
        if self._flushed:
            raise RuntimeError("push after flush: create a new MultiPassDedup for a new stream")
        mf = self._to_model_frame(frame)
        index = self.first_index + self.stats.frames_in
        self.stats.frames_in += 1
        if self._retimer is not None:
            return [self._emit(t) for t in self._retimer.push(mf)]
        shot = self._shot
        out: list[np.ndarray] = []
        if shot is not None and self.compensate_delay and self.scene is not None \
                and self._scene_change(shot.last, mf):
            self.stats.scene_changes += 1
            out += self._end_shot(final=False)
            shot = None
        if shot is None:
            return out + self._start_shot(mf, index)
        shot.frames += 1
        shot.last = mf
        shot.passes[0].pending.append(_Element(mf))
        return out + self._advance(drain=False)

    def flush(self) -> list[np.ndarray]:
        """End of input: returns every remaining output frame."""
        if self._flushed:
            return []
        self._flushed = True
        if self._retimer is not None:
            return [self._emit(t) for t in self._retimer.flush()]
        return self._end_shot(final=True) if self._shot is not None else []

    def close(self) -> None:
        """Abandon the stream: drop the frames still held (nothing more is returned; push refuses)."""
        self._flushed = True
        self._shot = None

    def _count(self, counter: str, n: int) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + n)

    def _to_model_frame(self, frame: np.ndarray) -> ModelFrame:
        check_frame(frame)
        if self._shape is None:
            self._shape, self._dtype = frame.shape, frame.dtype
            self._padder = Padder(frame.shape[0], frame.shape[1], self.model.alignment(self.scale))
        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise ValueError(f"frame {self.stats.frames_in} is {frame.shape} {frame.dtype}; the stream started "
                             f"with {self._shape} {self._dtype}")
        return ModelFrame(self._padder.pad(self.model.to_tensor(frame)))

    def _start_shot(self, first: ModelFrame, index: int) -> list[np.ndarray]:
        first_step = self.mapper.step_at_or_after(Fraction(index))
        self._shot = _Shot(first, self.n_pass, index, first_step)
        if self.compensate_delay and Fraction(first_step) / self.ratio == index:
            # The output step at the shot's first instant is its first frame, exactly.
            return [self._emit(first.tensor)]
        return []

    def _end_shot(self, final: bool) -> list[np.ndarray]:
        """Close the shot the way the reference closes a stream: copies of its last frame, then drain."""
        shot = self._shot
        copies = 1
        if self.compensate_delay:
            end = shot.start + shot.frames
            shot.last_step = self.mapper.step_at_or_after(Fraction(end)) - (0 if final else 1)
            # Enough copies that the last sequence reaches the last step's (delayed) position.
            last_pos = Fraction(shot.last_step) / self.ratio - shot.start + self.delay
            copies = max(1, math.floor(last_pos) + 2 - shot.frames)
        for i in range(copies):
            shot.passes[0].pending.append(_Element(shot.last, final=i == copies - 1, closing=True))
        out = self._advance(drain=True)
        self._shot = None
        return out

    # -- scheduling ------------------------------------------------------------------------

    def _advance(self, drain: bool) -> list[np.ndarray]:
        passes = self._shot.passes
        out: list[np.ndarray] = []
        if self.wavefront:
            # One step per input frame keeps every pass one pair behind the one before it.
            while True:
                ready = [k for k, p in enumerate(passes) if p.pending]
                if not ready:
                    break
                out += self._run_step(ready)
                if not drain:
                    break
        else:
            # Reference order: each new frame cascades through the passes, one model call at a time.
            for k, p in enumerate(passes):
                while p.pending:
                    out += self._run_step([k])
        return out

    def _run_step(self, layers: Sequence[int]) -> list[np.ndarray]:
        plans = [self._plan(k) for k in layers]
        requests = [p.request for p in plans if p.request is not None]
        results = iter(self.model.interpolate_batch(requests, self.scale) if requests else [])
        if requests:
            self.stats.batches += 1
        out: list[np.ndarray] = []
        for plan in plans:
            produced = iter(next(results)) if plan.request is not None else iter(())
            x, y = self._shot.passes[plan.layer].prev, plan.element.frame
            frames = [x.tensor if s == "x" else y.tensor if s == "y" else next(produced) for s in plan.slots]
            self._finish(plan, frames, out)
        return out

    def _output_times(self, p: _Pass, el: _Element) -> list[Fraction]:
        """Where the output steps fall within the last sequence's pair ``p.index``."""
        if not self.compensate_delay:
            return self.mapper.range(p.index, p.index + 1, True, el.final)
        shot = self._shot
        # Step i shows time i / r, found at position i / r - start + delay of the shot's sequence.
        offset = shot.start - self.delay
        lo = self.mapper.step_at_or_after(p.index + offset)
        hi = self.mapper.step_at_or_after(p.index + 1 + offset)
        steps = range(max(lo, shot.first_step), hi if shot.last_step is None else min(hi, shot.last_step + 1))
        return [Fraction(i) / self.ratio - offset - p.index for i in steps
                if not (i == shot.first_step and Fraction(i) / self.ratio == shot.start)]

    def _plan(self, k: int) -> _PairPlan:
        """Decide what pair ``k`` needs: copies of its ends, and which times the model must compute."""
        p = self._shot.passes[k]
        el = p.pending.popleft()
        x, y = p.prev, el.frame
        ts = self._output_times(p, el) if k == self.n_pass - 1 else [HALF]
        if ts and self.scene is not None and not self.compensate_delay and self._scene_change(x, y):
            self.stats.scene_changes += 1
            ts = [Fraction(0)] * len(ts)
        slots: list = []
        if 0 in ts:
            ts.remove(0)
            slots.append("x")
        tail = []
        if 1 in ts:
            ts.remove(1)
            tail.append("y")
        request = None
        # With reference timing the closing copy is interpolated as the reference did (GMFSS's output
        # between identical frames is not exactly that frame), so the last frames match it.
        skip = self.skip_duplicates and (self.compensate_delay or not el.closing)
        if ts and skip and (x is y or torch.equal(x.tensor, y.tensor)):
            # The model's output between two identical frames is that frame.
            self.stats.duplicate_skips += len(ts)
            slots += ["x"] * len(ts)
        elif ts:
            self.stats.model_calls += len(ts)
            request = PairRequest(x, y, [float(t) for t in ts])
            slots += ["model"] * len(ts)
        return _PairPlan(k, el, slots + tail, request)

    def _scene_change(self, x: ModelFrame, y: ModelFrame) -> bool:
        return self.scene.is_change(self._padder.crop(x.tensor), self._padder.crop(y.tensor))

    def _finish(self, plan: _PairPlan, frames: list[torch.Tensor], out: list[np.ndarray]) -> None:
        passes = self._shot.passes
        p = passes[plan.layer]
        p.prev = plan.element.frame
        p.index += 1
        if plan.layer < self.n_pass - 1:
            passes[plan.layer + 1].pending.append(_Element(ModelFrame(frames[0]), plan.element.final))
            return
        out += [self._emit(f) for f in frames]

    def _emit(self, t: torch.Tensor) -> np.ndarray:
        self.stats.frames_out += 1
        return to_array(self._padder.crop(t), self._dtype)
