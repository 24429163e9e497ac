"""MultiPassDedup, the streaming engine: one facade over two strategies for held drawings.

- **The passes** (``passes.MidpointPasses``, the original program): n-1 passes of midpoint
  interpolation, then interpolation to the output frame rate; optionally delay-compensated.
- **Keyframe re-timing** (``retiming.KeyframeRetimer``, ``adaptive``): held drawings are re-drawn region
  by region at their true time and everything else stays sharp; ``n_pass`` and ``compensate_delay``
  do not apply (nothing is delayed; scene cuts always end a shot).

The facade does what both share: the settings (validated once), frame checks and padding, the
conversion back to arrays, the counters and the end of the stream. A strategy takes padded model
frames and returns padded output tensors in output order (``Strategy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import torch

from ...settings import EngineSettings
from ..layers.frames import Padder, check_frame, to_array
from ..models.base import ModelFrame, PairInterpolator
from .passes import MidpointPasses
from .retiming import KeyframeRetimer
from .scene import SceneDetector


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


class Strategy(Protocol):
    """How held drawings are smoothed: padded model frames in, padded output tensors out, in output order."""

    def push(self, frame: ModelFrame) -> list[torch.Tensor]: ...

    def flush(self) -> list[torch.Tensor]: ...

    def memory_bound(self, height: int, width: int) -> int: ...


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
        """The library's keywords, with the original program's defaults (``compensate_delay=False``: its timing;
        ``adaptive=False``: its passes). The commands' settings come whole through :meth:`from_settings`."""
        # Every argument is checked here, once, by the settings object the daemon and clients use too.
        settings = EngineSettings.from_keywords(
            model=model.name or type(model).__name__, n_pass=n_pass, src_fps=src_fps, dst_fps=dst_fps, times=times,
            scdet=scdet, scdet_threshold=scdet_threshold, scale=scale, compensate_delay=compensate_delay,
            first_index=first_index, adaptive=adaptive)
        self._start(model, settings, wavefront, skip_duplicates)

    @classmethod
    def from_settings(cls, model: PairInterpolator, settings: EngineSettings, *, wavefront: bool = True,
                      skip_duplicates: bool = True) -> MultiPassDedup:
        """The engine for ``settings`` as the commands and the daemon resolved them (``src_fps`` must be known)."""
        engine = cls.__new__(cls)
        engine._start(model, settings, wavefront, skip_duplicates)
        return engine

    def _start(self, model: PairInterpolator, settings: EngineSettings, wavefront: bool,
               skip_duplicates: bool) -> None:
        self.model = model
        self.settings = settings
        # A chunk of a longer video: its frames keep their indices there, so the output steps and shots are that
        # video's (output frame k of this stream is the video's step ceil(first_index * ratio) + k).
        self.first_index = self.settings.first_index
        self.src_fps = self.settings.require_source()
        self.ratio = self.settings.ratio
        self.n_pass = self.settings.passes
        self.out_fps = self.src_fps * self.ratio
        self.scale = self.settings.scale
        self.compensate_delay = self.settings.compensate_delay
        self.stats = PipelineStats()
        self._padder: Padder | None = None
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._flushed = False
        scene = SceneDetector(self.settings.scdet_threshold) if self.settings.scdet else None
        self.strategy: Strategy
        if self.settings.adaptive:
            self.strategy = KeyframeRetimer(model, self.ratio, self.scale, scene, self._crop, self._count,
                                            skip_duplicates, self.first_index)
        else:
            self.strategy = MidpointPasses(model, self.settings, scene, self._crop, self._count, wavefront,
                                           skip_duplicates)

    def memory_bound(self, height: int, width: int) -> int:
        """The most memory this pipeline holds for frames of this size, in bytes, the model's working memory
        during a call aside (each strategy says how it adds up)."""
        return self.strategy.memory_bound(height, width)

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """Feed one input frame; returns the output frames that became ready (possibly none)."""
        if self._flushed:
            raise RuntimeError("push after flush: create a new MultiPassDedup for a new stream")
        mf = self._to_model_frame(frame)
        self.stats.frames_in += 1
        return [self._emit(t) for t in self.strategy.push(mf)]

    def flush(self) -> list[np.ndarray]:
        """End of input: returns every remaining output frame."""
        if self._flushed or self.stats.frames_in == 0:
            self._flushed = True
            return []
        self._flushed = True
        return [self._emit(t) for t in self.strategy.flush()]

    def close(self) -> None:
        """Abandon the stream: nothing more is returned, push refuses, and the strategy's frames are dropped."""
        self._flushed = True
        self.strategy = _Closed()

    def _count(self, counter: str, n: int) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + n)

    def _crop(self, t: torch.Tensor) -> torch.Tensor:
        return self._padder.crop(t)

    def _to_model_frame(self, frame: np.ndarray) -> ModelFrame:
        check_frame(frame)
        if self._shape is None:
            self._shape, self._dtype = frame.shape, frame.dtype
            self._padder = Padder(frame.shape[0], frame.shape[1], self.model.alignment(self.scale))
        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise ValueError(f"frame {self.stats.frames_in} is {frame.shape} {frame.dtype}; the stream started "
                             f"with {self._shape} {self._dtype}")
        return ModelFrame(self._padder.pad(self.model.to_tensor(frame)))

    def _emit(self, t: torch.Tensor) -> np.ndarray:
        self.stats.frames_out += 1
        return to_array(self._padder.crop(t), self._dtype)


class _Closed:
    """The strategy of a closed pipeline: it holds nothing and returns nothing."""

    def push(self, frame: ModelFrame) -> list[torch.Tensor]:
        raise RuntimeError("push after close")

    def flush(self) -> list[torch.Tensor]:
        return []

    def memory_bound(self, height: int, width: int) -> int:
        return 0
