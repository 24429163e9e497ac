"""The original MultiPassDedup: n-1 passes of midpoint interpolation, then interpolation to the output rate.

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
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from ...settings import EngineSettings
from ..models.base import ModelFrame, PairInterpolator, PairRequest
from .scene import SceneDetector
from .timestamps import TimestampMapper

HALF = Fraction(1, 2)


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


class MidpointPasses:
    """The passes as a strategy of ``MultiPassDedup``: padded model frames in, padded output tensors out.

    ``crop`` cuts a padded frame to the picture (scene detection must not see the padding); ``count``
    receives the work done (``model_calls``, ``batches``, ``duplicate_skips``, ``scene_changes``) as
    ``count(name, n)``. ``wavefront`` and ``skip_duplicates`` change how much work is done, not the result.
    """

    def __init__(self, model: PairInterpolator, settings: EngineSettings, scene: SceneDetector | None,
                 crop: Callable[[torch.Tensor], torch.Tensor], count: Callable[[str, int], None],
                 wavefront: bool = True, skip_duplicates: bool = True) -> None:
        self.model = model
        self.ratio = settings.ratio
        self.scale = settings.scale
        self.n_pass = settings.passes
        self.compensate_delay = settings.compensate_delay
        self.delay = Fraction(self.n_pass - 1, 2) if self.compensate_delay else Fraction(0)
        self.scene = scene
        self.crop = crop
        self.count = count
        self.wavefront = wavefront
        self.skip_duplicates = skip_duplicates
        self.mapper = TimestampMapper(self.ratio)
        self.received = settings.first_index  # the index of the next input frame
        self._shot: _Shot | None = None

    def memory_bound(self, height: int, width: int) -> int:
        """The most memory the passes hold for frames of this size, in bytes, the model's working
        memory during a call aside: ``2 n_pass + 2`` frames with their cached features (each pass
        keeps its last frame and at most one waiting), and what one step returns before the frames
        it replaces are freed: a midpoint per pass but the last, the last pass's output frames."""
        held = (2 * self.n_pass + 2) * self.model.held_frame_bytes(height, width, self.scale)
        step_outputs = (self.n_pass - 1 + math.ceil(self.ratio) + 1) * self.model.held_frame_bytes(
            height, width, self.scale, features=False)
        return held + step_outputs

    def push(self, mf: ModelFrame) -> list[torch.Tensor]:
        """Feed one input frame; the output tensors that became ready."""
        index = self.received
        self.received += 1
        shot = self._shot
        out: list[torch.Tensor] = []
        if shot is not None and self.compensate_delay and self.scene is not None \
                and self._scene_change(shot.last, mf):
            self.count("scene_changes", 1)
            out += self._end_shot(final=False)
            shot = None
        if shot is None:
            return out + self._start_shot(mf, index)
        shot.frames += 1
        shot.last = mf
        shot.passes[0].pending.append(_Element(mf))
        return out + self._advance(drain=False)

    def flush(self) -> list[torch.Tensor]:
        """End of input: every remaining output."""
        return self._end_shot(final=True) if self._shot is not None else []

    def _start_shot(self, first: ModelFrame, index: int) -> list[torch.Tensor]:
        first_step = self.mapper.step_at_or_after(Fraction(index))
        self._shot = _Shot(first, self.n_pass, index, first_step)
        if self.compensate_delay and Fraction(first_step) / self.ratio == index:
            # The output step at the shot's first instant is its first frame, exactly.
            return [first.tensor]
        return []

    def _end_shot(self, final: bool) -> list[torch.Tensor]:
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

    def _advance(self, drain: bool) -> list[torch.Tensor]:
        passes = self._shot.passes
        out: list[torch.Tensor] = []
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

    def _run_step(self, layers: Sequence[int]) -> list[torch.Tensor]:
        plans = [self._plan(k) for k in layers]
        requests = [p.request for p in plans if p.request is not None]
        results = iter(self.model.interpolate_batch(requests, self.scale) if requests else [])
        if requests:
            self.count("batches", 1)
        out: list[torch.Tensor] = []
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
            self.count("scene_changes", 1)
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
            self.count("duplicate_skips", len(ts))
            slots += ["x"] * len(ts)
        elif ts:
            self.count("model_calls", len(ts))
            request = PairRequest(x, y, [float(t) for t in ts])
            slots += ["model"] * len(ts)
        return _PairPlan(k, el, slots + tail, request)

    def _scene_change(self, x: ModelFrame, y: ModelFrame) -> bool:
        return self.scene.is_change(self.crop(x.tensor), self.crop(y.tensor))

    def _finish(self, plan: _PairPlan, frames: list[torch.Tensor], out: list[torch.Tensor]) -> None:
        passes = self._shot.passes
        p = passes[plan.layer]
        p.prev = plan.element.frame
        p.index += 1
        if plan.layer < self.n_pass - 1:
            passes[plan.layer + 1].pending.append(_Element(ModelFrame(frames[0]), plan.element.final))
            return
        out += frames
