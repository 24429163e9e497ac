"""What adaptive re-timing decides, without a model: which regions of each input frame it re-draws.

``HoldPreview`` is the re-timer (``retiming.KeyframeRetimer``) with its renderings left out: the same
hold map, the same evidence check, the same budget and the same handling of shot ends, so its
decisions are those ``MultiPassDedup(adaptive=True)`` makes on the same frames (the hold map does not
depend on the model). ``tint_holds`` paints them over a frame, so that a user can see a wrong decision
on their footage (``mpd-client --show-holds``). The composite also takes, near each region, the pixels
the region's rendering moves (where a drawing leaves and where it goes); those are not shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from ..layers.frames import check_frame, to_tensor
from ..models.base import ModelFrame
from .retiming import HeldGroup, KeyframeRetimer
from .scene import SceneDetector

# Tint per hold: twos green, threes yellow, fours red.
HOLD_TINTS = {2: (0, 220, 0), 3: (255, 200, 0), 4: (255, 40, 40)}
TINT_STRENGTH = 0.45  # how much of the tint colour is mixed into a re-timed region


@dataclass
class HoldDecision:
    """Input frame ``index``'s regions that adaptive re-timing re-draws (its hold map's blocks of ``block`` px)."""

    index: int
    groups: list[HeldGroup]
    block: int


class HoldPreview(KeyframeRetimer):
    """Feed HxWx3 uint8 or uint16 RGB frames with ``push``; get each frame's decision once it is made (input
    ``j + 3`` arrived, as in the engine), the rest at ``flush``. ``scdet_threshold`` None: no scene detection."""

    def __init__(self, scdet_threshold: float | None = 0.3) -> None:
        scene = SceneDetector(scdet_threshold) if scdet_threshold is not None else None
        super().__init__(model=None, ratio=Fraction(1), scale=1.0, scene=scene, crop=lambda t: t,  # type: ignore[arg-type]
                         count=lambda _name, _n: None)
        self._made: list[HoldDecision] = []

    def push(self, frame: np.ndarray) -> list[HoldDecision]:  # type: ignore[override]
        """One input frame; the decisions made since the last call."""
        check_frame(frame)
        super().push(ModelFrame(to_tensor(frame, torch.device("cpu"))))
        return self._take()

    def flush(self) -> list[HoldDecision]:  # type: ignore[override]
        """End of input: the remaining decisions."""
        super().flush()
        return self._take()

    def _take(self) -> list[HoldDecision]:
        made, self._made = self._made, []
        return made

    def _decide(self, j: int, known: int) -> list[HeldGroup]:
        groups = super()._decide(j, known)
        self._made.append(HoldDecision(j, groups, self.block))
        return groups

    def _composite(self, j: int, groups: list[HeldGroup]) -> ModelFrame:
        return self.frames[j]  # nothing is rendered: only the decision is wanted

    def _interval(self, a: int, b: int | None, close: bool = False) -> list[torch.Tensor]:
        return []


def tint_holds(frame: np.ndarray, groups: Sequence[HeldGroup], block: int) -> np.ndarray:
    """``frame`` (HxWx3 uint8) with each group's blocks tinted by its hold (``HOLD_TINTS``) and outlined by a
    one-pixel border of the tint."""
    out = frame.astype(np.float32)
    height, width = frame.shape[:2]
    for g in groups:
        colour = np.array(HOLD_TINTS[g.end - g.start], np.float32)
        blocks = g.blocks.cpu().numpy()
        mask = blocks.repeat(block, 0).repeat(block, 1)[:height, :width]
        out[mask] = out[mask] * (1 - TINT_STRENGTH) + colour * TINT_STRENGTH
        edge = mask & ~(np.pad(mask, 1, mode="edge")[:-2, 1:-1] & np.pad(mask, 1, mode="edge")[2:, 1:-1]
                        & np.pad(mask, 1, mode="edge")[1:-1, :-2] & np.pad(mask, 1, mode="edge")[1:-1, 2:])
        out[edge] = colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
