"""MultiPassDedup: n-1 passes of midpoint interpolation, then interpolation to the output frame rate.

Sequence ``P0`` is the input (plus a copy of its last frame at the end); ``Pk`` is the first
input frame followed by the midpoints of neighbouring frames of ``Pk-1``. The pairs of the last
sequence are interpolated at the output timestamps. This reproduces the reference program's
output exactly (DESIGN.md §2) while scheduling the work differently: in wavefront mode every
pass advances one pair per step, so the model calls of one step are independent and run as one
batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from .frames import Padder, check_frame, to_array
from .interpolator import Interpolator, ModelFrame, PairRequest, check_scale
from .scene import SceneDetector
from .timestamps import TimestampMapper, auto_passes, to_fraction

HALF = Fraction(1, 2)


@dataclass
class PipelineStats:
    """What one pipeline did: frames in and out, network evaluations, evaluations it avoided."""

    frames_in: int = 0
    frames_out: int = 0
    model_calls: int = 0  # interpolated frames asked of the model
    batches: int = 0  # interpolate_batch calls made
    duplicate_skips: int = 0  # evaluations skipped because the pair's frames were bit-identical
    scene_changes: int = 0  # pairs detected as a cut

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Element:
    """One frame of a pass sequence; ``final`` marks the last frame the sequence will ever get."""

    frame: ModelFrame
    final: bool = False


class _Pass:
    """One sequence ``Pk``: its latest frame, how many pairs it has done, and frames waiting."""

    def __init__(self, first: ModelFrame) -> None:
        self.prev = first
        self.index = 0
        self.pending: deque[_Element] = deque()


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
    ``k`` has presentation time ``k / out_fps``.
    """

    def __init__(self, model: Interpolator, n_pass: int = 0, src_fps: int | str | Fraction = Fraction(24000, 1001),
                 dst_fps: int | str | Fraction | None = 60, times: float | str | Fraction | None = None,
                 scdet: bool = True, scdet_threshold: float = 0.3, scale: float = 1.0,
                 compensate_delay: bool = False, wavefront: bool = True, skip_duplicates: bool = True) -> None:
        self.model = model
        self.src_fps = to_fraction(src_fps)
        if self.src_fps <= 0:
            raise ValueError(f"source frame rate must be positive, got {self.src_fps}")
        if times is not None and float(times) > 0:
            self.ratio = to_fraction(times)
            if self.ratio <= 1:
                raise ValueError(f"times must exceed 1, got {times}")
        elif dst_fps is not None:
            dst = to_fraction(dst_fps)
            if dst <= self.src_fps:
                raise ValueError(f"target frame rate {dst} must exceed the source frame rate {self.src_fps}")
            self.ratio = dst / self.src_fps
        else:
            raise ValueError("give either dst_fps or times")
        if isinstance(n_pass, bool) or int(n_pass) != n_pass or n_pass < 0:
            raise ValueError(f"n_pass must be a whole number >= 0 (0 = automatic), got {n_pass}")
        self.n_pass = int(n_pass) or auto_passes(self.src_fps)
        self.out_fps = self.src_fps * self.ratio
        self.scale = check_scale(scale)
        self.scene = SceneDetector(scdet_threshold) if scdet else None
        self.compensate_delay = compensate_delay
        self.delay = Fraction(self.n_pass - 1, 2) if compensate_delay else Fraction(0)
        self.mapper = TimestampMapper(self.ratio)
        self.wavefront = wavefront
        self.skip_duplicates = skip_duplicates
        self.stats = PipelineStats()
        self._passes: list[_Pass] = []
        self._padder: Padder | None = None
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._last: ModelFrame | None = None
        self._flushed = False
        if compensate_delay:
            raise NotImplementedError("compensate_delay is not implemented yet")

    # -- input -----------------------------------------------------------------------------

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """Feed one input frame; returns the output frames that became ready (possibly none)."""
        if self._flushed:
            raise RuntimeError("push after flush: create a new MultiPassDedup for a new stream")
        mf = self._to_model_frame(frame)
        self.stats.frames_in += 1
        self._last = mf
        if not self._passes:
            self._passes = [_Pass(mf) for _ in range(self.n_pass)]
            return []
        self._passes[0].pending.append(_Element(mf))
        return self._advance(drain=False)

    def flush(self) -> list[np.ndarray]:
        """End of input: returns every remaining output frame."""
        if self._flushed:
            return []
        self._flushed = True
        if self._last is None:
            return []
        # The reference closes the stream with a copy of the last frame.
        self._passes[0].pending.append(_Element(self._last, final=True))
        return self._advance(drain=True)

    def _to_model_frame(self, frame: np.ndarray) -> ModelFrame:
        check_frame(frame)
        if self._shape is None:
            self._shape, self._dtype = frame.shape, frame.dtype
            self._padder = Padder(frame.shape[0], frame.shape[1], self.model.alignment(self.scale))
        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise ValueError(f"frame {self.stats.frames_in} is {frame.shape} {frame.dtype}; the stream started "
                             f"with {self._shape} {self._dtype}")
        return ModelFrame(self._padder.pad(self.model.to_tensor(frame)))

    # -- scheduling ------------------------------------------------------------------------

    def _advance(self, drain: bool) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        if self.wavefront:
            # One step per input frame keeps every pass one pair behind the one before it.
            while True:
                ready = [k for k, p in enumerate(self._passes) if p.pending]
                if not ready:
                    break
                out += self._run_step(ready)
                if not drain:
                    break
        else:
            # Reference order: each new frame cascades through the passes, one model call at a time.
            for k, p in enumerate(self._passes):
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
            x, y = self._passes[plan.layer].prev, plan.element.frame
            frames = [x.tensor if s == "x" else y.tensor if s == "y" else next(produced) for s in plan.slots]
            self._finish(plan, frames, out)
        return out

    def _plan(self, k: int) -> _PairPlan:
        """Decide what pair ``k`` needs: copies of its ends, and which times the model must compute."""
        p = self._passes[k]
        el = p.pending.popleft()
        x, y = p.prev, el.frame
        last = k == self.n_pass - 1
        ts = self.mapper.range(p.index, p.index + 1, True, el.final) if last else [HALF]
        if self.scene is not None and self._scene_change(x, y):
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
        if ts and self.skip_duplicates and (x is y or torch.equal(x.tensor, y.tensor)):
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
        p = self._passes[plan.layer]
        p.prev = plan.element.frame
        p.index += 1
        if plan.layer < self.n_pass - 1:
            self._passes[plan.layer + 1].pending.append(_Element(ModelFrame(frames[0]), plan.element.final))
            return
        for f in frames:
            out.append(to_array(self._padder.crop(f), self._dtype))
        self.stats.frames_out += len(frames)
