"""Keyframe re-timing, ``MultiPassDedup(adaptive=True)``: smooth held drawings, sharp everything else.

The midpoint passes smooth characters drawn on twos, threes and fours, but re-sample the whole
picture, so whatever moves on every frame gets blurrier. Here a held drawing is treated as what it
is, a duplicate, region by region:

- Hold map. The picture is cut into blocks of about ``height / 36`` px. A block *changed* between
  input frames ``k`` and ``k + 1`` when one of its pixels moved by more than 8 (of 255) in some
  channel. For frame ``j`` and each block, ``ka`` is the last frame ``<= j`` where the block changed
  (or its shot began) and ``kb`` the next frame ``> j`` where it changes. A block with
  ``2 <= kb - ka <= 4`` shows a drawing held on twos, threes or fours; ``kb - ka == 1`` moves on ones;
  longer holds are stills and stay as they are.
- Groups. Frame ``j``'s held blocks are grouped by ``(ka, kb)``; only 8-connected regions of at
  least 6 blocks count (a held drawing is one region; texture that happened not to change is
  scattered).
- Evidence. A group is a candidate, re-timed only on positive evidence of a hold (``is_hold``):
  over its blocks, with each block's mean difference, the change from ``ka`` to ``kb - 1`` (the
  plateau) must be at most a tenth of the smaller change where the drawing came (``ka - 1`` to
  ``ka``) and where it went (``kb - 1`` to ``kb``), both above the shot's noise floor (the lowest,
  over its pairs so far, of a pair's 10th-percentile block difference), and that jump at least
  ``max(4, floor)`` above the floor; a hold that began with its shot needs a twentieth. Footage that
  moves on every frame (live action, 3D, slow pans, grain, encodes) changes about as much within a
  would-be hold as at its ends, so its candidates are turned down and it stays plain interpolation.
- Rendering. Each group is drawn once, at its true time, from its own two keyframes:
  ``S = model(I[ka], I[kb], (j - ka) / (kb - ka))``. For anything that moves linearly over
  ``[ka, kb]`` (the drawing and the background behind it) that is the picture at time ``j``.
- Composite. ``S`` replaces the input over the group's blocks and over the pixels nearby where it
  differs from the input by more than 24 (where the drawing was and where it goes), except on
  fresh drawings of other regions (changed at ``j`` and then held: exact in the input), grown and
  feathered by 2 px. That gives the sharp, re-timed frame ``Q[j]``.
- Last pass. Plain interpolation between ``Q[j]`` and ``Q[j + 1]`` at the output times.
- End of a shot. A drawing shown in the shot's last frames has no next keyframe: where it goes next
  is not in the input, so it is shown as drawn, as plain interpolation shows it, and the motion
  stops at the shot's last drawing. Nothing is guessed there: an ease that slowed the last move to
  a stop at the shot's last frame re-drew the last drawings away from their own frames and lost
  0.1-1.2 dB against the truth on every held real-footage case (docs/benchmarks.md).

Streaming: ``Q[j]`` is known once input ``j + 3`` has arrived (a held group needs its next
keyframe, at most 4 frames after its last one), and the outputs of ``[j - 1, j)`` go out then: a
look-ahead of 4 input frames, about 10 frames held. Nothing is delayed, so there is no delay to
compensate. Scene cuts end a shot: a group never spans a cut (the last hold of a shot is a still)
and the outputs before a cut show the shot's last frame, as plain interpolation does. Group calls
are capped at 2 per input frame on average (up to 4 banked; larger groups first); a group left
out stays as the input, i.e. plain interpolation there. Output count and timestamps are those of
plain interpolation (``n_pass=1``). The measurements behind every constant:
docs/studies/adaptive-keyframe-retiming.md.

A chunk of a longer video (``first_index``) must begin at a scene cut: its frames keep their
indices there, so its output steps are the video's, and since nothing of a shot depends on the
shot before it (a shot's first frame has no held region, so the group budget is full again by its
second frame either way), a session that starts at a cut gives the frames of one that runs through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from ..models.base import ModelFrame, PairInterpolator, PairRequest
from .scene import SceneDetector
from .timestamps import TimestampMapper

MAX_HOLD = 4  # the longest hold re-timed (fours); longer ones are stills
CHANGE_LEVEL = 8.5 / 255  # a block changed when some pixel's channel moved by more than 8 of 255
BLOCKS_PER_HEIGHT = 36  # hold-map block size: about height / 36 px (4 at 144 lines, 8 at 288) ...
MIN_BLOCK = 4  # ... and no smaller (smaller blocks let texture that barely moves pass for a held region)
MIN_BLOCKS = 6  # smaller connected held regions are left as they are
SWEEP_RADIUS = 0.05  # how far (fraction of the width) a group's rendering may move a drawing
SWEEP_LEVEL = 24.5 / 255  # where the rendering differs from the input by more than 24 of 255: swept
GROW_PX = 2  # the composite mask is grown by this much ...
FEATHER_PX = 2  # ... and box-feathered with this radius
PROTECT_BLOCKS = 1  # fresh drawings are kept out of the swept part of a mask, dilated by this many blocks
GROUP_CALLS_PER_FRAME = 2  # the average budget of group renderings per input frame ...
GROUP_CALLS_BANKED = 4  # ... and how many may be saved up for a busy frame
NONE = 1 << 40  # "no next keyframe within the shot"
FLOOR_QUANTILE = 0.1  # a pair's noise level: this quantile of its blocks' mean differences ...
PLATEAU_RATIO = 0.1  # a hold: the change within it at most this share of the change at its ends (above the floor) ...
PLATEAU_RATIO_ONE_END = 0.05  # ... or of the change at its end alone, for a hold that began with its shot
JUMP_LEVEL = 4.0 / 255  # ... and the change at its ends at least this much, or the floor, above the floor
DIFFS_KEPT = 2 * MAX_HOLD + 2  # pairs whose block differences are kept (a group's start may lie that far back)


def block_size(height: int) -> int:
    """The hold map's block size for frames ``height`` px high."""
    return max(MIN_BLOCK, round(height / BLOCKS_PER_HEIGHT))


def block_changes(x: torch.Tensor, y: torch.Tensor, block: int) -> torch.Tensor:
    """Which blocks differ between two 1x3xHxW frames: an ``ceil(H / block) x ceil(W / block)`` bool map."""
    return block_differences(x, y, block)[0]


def block_differences(x: torch.Tensor, y: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``ceil(H / block) x ceil(W / block)`` maps of how two 1x3xHxW frames differ: which blocks changed
    (some pixel's channel moved by more than ``CHANGE_LEVEL``), and each block's mean difference (the mean
    over its pixels of the largest channel difference; the evidence a hold is weighed by)."""
    diff = (y.float() - x.float()).abs().amax(dim=1, keepdim=True)
    changed = F.max_pool2d(diff, block, block, ceil_mode=True)[0, 0] > CHANGE_LEVEL
    return changed, F.avg_pool2d(diff, block, block, ceil_mode=True)[0, 0]


def noise_level(mean_diff: torch.Tensor) -> float:
    """A pair's noise level: the ``FLOOR_QUANTILE`` quantile of its blocks' mean differences. Over a shot the
    lowest of these is its noise floor: what "unchanged" looks like in this footage (0 for clean animation,
    the grain or the encoder's noise elsewhere), taken where the picture is stillest."""
    return float(torch.quantile(mean_diff.flatten().float(), FLOOR_QUANTILE))


def is_hold(plateau: float, jump: float, floor: float, both_ends: bool = True) -> bool:
    """Positive evidence of a held drawing: the change within the hold (``plateau``) is noise next to the
    changes where the drawing came and where it is replaced (``jump``: the smaller; ``both_ends`` False: the
    hold began with its shot, so only where it is replaced, and the test is stricter), both measured above
    the shot's noise ``floor``. Motion on ones, however slow, changes about as much within a would-be hold
    as at its ends; a picture that jumps by less than ``JUMP_LEVEL`` (or the floor) is not a new drawing."""
    rise = jump - floor
    ratio = PLATEAU_RATIO if both_ends else PLATEAU_RATIO_ONE_END
    return rise >= max(JUMP_LEVEL, floor) and plateau - floor <= ratio * rise


def large_components(mask: torch.Tensor, min_size: int) -> torch.Tensor:
    """The cells of the 8-connected regions of the 2-D bool ``mask`` that have at least ``min_size`` cells."""
    if not mask.any():
        return mask
    h, w = mask.shape
    inside = mask.view(1, 1, h, w).float()
    labels = torch.arange(1, h * w + 1, dtype=torch.float32, device=mask.device).view(1, 1, h, w) * inside
    while True:  # every cell takes the largest label of its region (exact: labels stay below 2^24 here)
        spread = F.max_pool2d(labels, 3, 1, 1) * inside
        if torch.equal(spread, labels):
            break
        labels = spread
    flat = labels.view(-1).long()
    sizes = torch.bincount(flat, minlength=h * w + 1)
    return ((sizes[flat] >= min_size) & mask.view(-1)).view(h, w)


def held_frame_counts(ratio: Fraction) -> tuple[int, int]:
    """Frames a ``KeyframeRetimer`` holds at most, (with the model's cached features, without): the input
    frames that may still be keyframes and the newest, two re-timed frames; then the group renderings
    of one frame, one interval's outputs, and the masks' working memory (counted as two frames)."""
    return 2 * MAX_HOLD + 1, GROUP_CALLS_BANKED + math.ceil(ratio) + 1 + 2


@dataclass
class HeldGroup:
    """Blocks of frame ``j`` showing a drawing first shown at input ``start`` and replaced at input ``end``."""

    start: int
    end: int
    blocks: torch.Tensor  # bool, block grid

    def time(self, j: int) -> float:
        """Where frame ``j`` truly lies between the group's keyframes (0 at ``start``, 1 at ``end``)."""
        return (j - self.start) / (self.end - self.start)


def held_groups(j: int, last_change: torch.Tensor, next_change: torch.Tensor) -> list[HeldGroup]:
    """Frame ``j``'s held regions, one group per pair of keyframes, largest first.

    ``last_change`` / ``next_change`` are the per-block ``ka`` / ``kb`` (``NONE``: no next change)."""
    span = next_change - last_change
    held = (last_change < j) & (next_change > j) & (span >= 2) & (span <= MAX_HOLD)
    groups = _keyframe_groups(held, last_change, next_change)
    return sorted(groups, key=lambda g: -int(g.blocks.sum()))


def _keyframe_groups(mask: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> list[HeldGroup]:
    """One group per ``(start, end)`` pair of the blocks in ``mask``: its 8-connected regions of at least
    ``MIN_BLOCKS`` blocks, in the pairs' order."""
    groups = []
    for start, end in sorted(set(zip(starts[mask].tolist(), ends[mask].tolist()))):
        blocks = large_components(mask & (starts == start) & (ends == end), MIN_BLOCKS)
        if blocks.any():
            groups.append(HeldGroup(start, end, blocks))
    return groups


def _dilate(m: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(m, 2 * radius + 1, 1, radius) if radius > 0 else m


def _box_blur(m: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return m
    return F.avg_pool2d(F.pad(m, (radius,) * 4, mode="replicate"), 2 * radius + 1, 1)


def _pixels(blocks: torch.Tensor, block: int, height: int, width: int) -> torch.Tensor:
    """A block map as a 1x1xHxW float mask."""
    full = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)
    return full[:height, :width].float().view(1, 1, height, width)


def group_mask(group: HeldGroup, rendered: torch.Tensor, frame: torch.Tensor, fresh: torch.Tensor | None,
               block: int) -> torch.Tensor:
    """Where a group's rendering replaces the input frame (1x1xHxW in [0, 1]; both frames 1x3xHxW, uncropped
    of padding): its blocks, plus the pixels nearby that the rendering moved (the region the drawing
    leaves and the one it enters), minus fresh drawings, grown and feathered."""
    height, width = frame.shape[-2:]
    own = _pixels(group.blocks, block, height, width)
    near = _dilate(own, max(1, round(SWEEP_RADIUS * width)))
    moved = ((rendered.float() - frame.float()).abs().amax(dim=1, keepdim=True) > SWEEP_LEVEL).float()
    moved = _dilate(-_dilate(-moved, 1), 1)  # opening: drop isolated pixels
    if fresh is not None and fresh.any():
        moved = moved * (1 - _dilate(_pixels(fresh, block, height, width), PROTECT_BLOCKS * block))
    mask = torch.maximum(own, near * moved)
    return _box_blur(_dilate(mask, GROW_PX), FEATHER_PX).clamp(0, 1)


class KeyframeRetimer:
    """The streaming re-timer behind ``MultiPassDedup(adaptive=True)``: padded model frames in, padded output
    tensors out, as soon as they exist.

    ``crop`` cuts a padded frame to the picture (the hold map must not see the padding); ``count``
    receives the work done (``model_calls``, ``batches``, ``duplicate_skips``, ``scene_changes``,
    ``held_groups``) as ``count(name, n)``; ``first_index`` is the index of the first frame in a longer
    video whose shot begins there (the first output is that video's step ``ceil(first_index * ratio)``).
    """

    def __init__(self, model: PairInterpolator, ratio: Fraction, scale: float, scene: SceneDetector | None,
                 crop: Callable[[torch.Tensor], torch.Tensor], count: Callable[[str, int], None],
                 skip_duplicates: bool = True, first_index: int = 0) -> None:
        self.model = model
        self.ratio = ratio
        self.scale = scale
        self.scene = scene
        self.crop = crop
        self.count = count
        self.skip_duplicates = skip_duplicates
        self.mapper = TimestampMapper(ratio)
        self.block: int | None = None
        self.frames: dict[int, ModelFrame] = {}  # input frames that may still be a group's keyframe
        self.changed: dict[int, torch.Tensor] = {}  # changed[k]: blocks that differ between inputs k and k + 1
        self.diffs: dict[int, torch.Tensor] = {}  # diffs[k]: the blocks' mean differences between inputs k and k + 1
        self.floor = math.inf  # the shot's noise floor so far (``noise_level``)
        self.last_change: dict[int, torch.Tensor] = {}  # ka of frame k, per block
        self.retimed: dict[int, ModelFrame] = {}  # Q[j]
        self.first_index = first_index
        self.shot_start = first_index
        self.received = first_index  # the index of the next input frame
        self.next_final = first_index  # the next frame whose Q is decided
        self.next_step = self.mapper.step_at_or_after(Fraction(first_index))  # the next output step
        self.tokens = 0.0  # group renderings the budget allows now

    def push(self, frame: ModelFrame) -> list[torch.Tensor]:
        """Feed one input frame; the output tensors that became ready."""
        m = self.received
        self.received += 1
        out: list[torch.Tensor] = []
        if m > self.first_index and self.scene is not None and \
                self.scene.is_change(self.crop(self.frames[m - 1].tensor), self.crop(frame.tensor)):
            self.count("scene_changes", 1)
            out += self._end_shot(final=False)
        if m == self.shot_start:
            if self.block is None:
                self.block = block_size(self.crop(frame.tensor).shape[-2])
            height, width = self.crop(frame.tensor).shape[-2:]
            grid = (-(-height // self.block), -(-width // self.block))
            self.last_change[m] = torch.full(grid, m, dtype=torch.int64, device=frame.tensor.device)
        else:
            previous = self.crop(self.frames[m - 1].tensor)
            self.changed[m - 1], self.diffs[m - 1] = block_differences(previous, self.crop(frame.tensor), self.block)
            self.floor = min(self.floor, noise_level(self.diffs[m - 1]))
            self.last_change[m] = torch.where(self.changed[m - 1], m, self.last_change[m - 1])
        self.frames[m] = frame
        while self.next_final <= m - MAX_HOLD + 1:
            out += self._finalise(self.next_final, m)
        return out

    def flush(self) -> list[torch.Tensor]:
        """End of input: every remaining output."""
        return self._end_shot(final=True) if self.received > self.first_index else []

    def memory_bound(self, height: int, width: int) -> int:
        """The most memory the re-timer holds for frames of this size, in bytes (``held_frame_counts``)."""
        with_features, without = held_frame_counts(self.ratio)
        return (with_features * self.model.held_frame_bytes(height, width, self.scale)
                + without * self.model.held_frame_bytes(height, width, self.scale, features=False))

    # -- one frame ----------------------------------------------------------------------------

    def _finalise(self, j: int, known: int) -> list[torch.Tensor]:
        """Decide ``Q[j]`` (inputs up to ``known`` have arrived) and emit the outputs of ``[j - 1, j)``."""
        groups = self._decide(j, known)
        self.retimed[j] = self._composite(j, groups) if groups else self.frames[j]
        self.next_final = j + 1
        out = self._interval(j - 1, j) if j > self.shot_start else []
        # Forget what no later frame needs: keyframes of j + 1 are >= j + 2 - MAX_HOLD.
        for store, oldest in ((self.frames, j + 2 - MAX_HOLD), (self.changed, j), (self.last_change, j + 1),
                              (self.retimed, j), (self.diffs, j + 1 - DIFFS_KEPT)):
            for k in [k for k in store if k < oldest and k != self.received - 1]:
                del store[k]
        return out

    def _decide(self, j: int, known: int) -> list[HeldGroup]:
        """Frame ``j``'s groups to re-draw, largest first, within the budget: every candidate of the hold map that
        ``_evidence`` confirms."""
        next_change = torch.full_like(self.last_change[j], NONE)
        for k in range(known, j, -1):
            next_change = torch.where(self.changed[k - 1], k, next_change)
        groups = [g for g in held_groups(j, self.last_change[j], next_change) if self._evidence(g, j)]
        self.tokens = min(GROUP_CALLS_BANKED, self.tokens + GROUP_CALLS_PER_FRAME)
        groups = groups[:int(self.tokens)]
        self.tokens -= len(groups)
        return groups

    def _composite(self, j: int, groups: list[HeldGroup]) -> ModelFrame:
        """``Q[j]``: each group drawn once from its keyframes at its time, composited into input frame ``j``."""
        frame = self.frames[j]
        self.count("held_groups", len(groups))
        self.count("model_calls", len(groups))
        self.count("batches", 1)
        rendered = self.model.interpolate_batch(
            [PairRequest(self.frames[g.start], self.frames[g.end], [g.time(j)]) for g in groups], self.scale)
        fresh = None
        if j > self.shot_start:
            still_next = ~self.changed[j] if j in self.changed else torch.ones_like(self.changed[j - 1])
            fresh = large_components(self.changed[j - 1] & still_next, MIN_BLOCKS)
        q = frame.tensor.float()
        pad = _Pad(frame.tensor, self.crop)
        for g, [s] in sorted(zip(groups, rendered), key=lambda pair: (pair[0].start, pair[0].end)):
            mask = pad(group_mask(g, self.crop(s), self.crop(frame.tensor), fresh, self.block))
            q = q + (s.float() - q) * mask
        return ModelFrame(q.to(frame.tensor.dtype))

    def _evidence(self, group: HeldGroup, j: int) -> bool:
        """Whether frame ``j``'s group shows a held drawing (``is_hold``): over the group's blocks, the change
        from the drawing's first frame to its last against the changes where it came and where it went. Without
        the frames to weigh it, no."""
        def mean_difference(a: int, b: int) -> float | None:
            if b == a + 1 and a in self.diffs:
                return float(self.diffs[a][group.blocks].mean())
            if a not in self.frames or b not in self.frames:
                return None
            _, diff = block_differences(self.crop(self.frames[a].tensor), self.crop(self.frames[b].tensor),
                                        self.block)
            return float(diff[group.blocks].mean())

        plateau = mean_difference(group.start, group.end - 1)
        jumps = [mean_difference(group.end - 1, group.end)]
        if group.start > self.shot_start:
            jumps.append(mean_difference(group.start - 1, group.start))
        if plateau is None or any(v is None for v in jumps):
            return False
        return is_hold(plateau, min(jumps), self.floor, both_ends=len(jumps) == 2)

    def _end_shot(self, final: bool) -> list[torch.Tensor]:
        """Decide the shot's remaining frames without looking past it, then its last interval (held)."""
        last = self.received - 1 if final else self.received - 2
        out: list[torch.Tensor] = []
        while self.next_final <= last:
            out += self._finalise(self.next_final, last)
        out += self._interval(last, None, close=final)
        self.shot_start = last + 1
        self.frames = {k: v for k, v in self.frames.items() if k > last}
        self.changed, self.last_change, self.retimed, self.diffs = {}, {}, {}, {}
        self.floor = math.inf
        self.tokens = 0.0  # as at a session's start (no output changes: see the module's last paragraph)
        return out

    def _interval(self, a: int, b: int | None, close: bool = False) -> list[torch.Tensor]:
        """The outputs at times in ``[a, a + 1)`` (``close``: ``[a, a + 1]``) between ``Q[a]`` and ``Q[b]``
        (``b`` None: the shot ends at ``a``, and they all show ``Q[a]``)."""
        stop = self.mapper.step_at_or_after(Fraction(a + 1)) + (1 if close else 0)
        fractions = [Fraction(i) / self.ratio - a for i in range(self.next_step, stop)]
        self.next_step = max(self.next_step, stop)
        x = self.retimed[a]
        inner = [f for f in fractions if f != 0] if b is not None else []
        if not inner:
            return [x.tensor] * len(fractions)
        y = self.retimed[b]
        if self.skip_duplicates and (x is y or torch.equal(x.tensor, y.tensor)):
            self.count("duplicate_skips", len(inner))
            return [x.tensor] * len(fractions)
        self.count("model_calls", len(inner))
        self.count("batches", 1)
        [made] = self.model.interpolate_batch([PairRequest(x, y, [float(f) for f in inner])], self.scale)
        produced = iter(made)
        return [x.tensor if f == 0 else next(produced) for f in fractions]


class _Pad:
    """Pads a 1x1xhxw mask of the picture to the frame's padded size (edge values repeated, as frames are)."""

    def __init__(self, padded: torch.Tensor, crop: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.height, self.width = padded.shape[-2:]
        self.crop_height, self.crop_width = crop(padded).shape[-2:]

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = self.height - self.crop_height, self.width - self.crop_width
        return F.pad(mask, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else mask
