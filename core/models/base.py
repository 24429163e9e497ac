"""The model-facing interface the pipeline uses: pairs of frames in, frames at times ``ts`` out."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from ...settings import ALLOWED_SCALES
from ..layers.frames import Padder, check_frame, to_array, to_tensor
from ..precision import DTYPES, PrecisionChoice, autocast

T = TypeVar("T")


def check_scale(scale: float) -> float:
    """The flow scale must be one the networks' strides can divide evenly."""
    if float(scale) not in ALLOWED_SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(str, ALLOWED_SCALES))}, got {scale}")
    return float(scale)


@dataclass
class CallStats:
    """Counters the benchmarks and tests read."""

    model_calls: int = 0  # one per interpolated output frame (one time t of one pair)
    pairs: int = 0  # one per (x, y) pair handed to the network
    batches: int = 0  # one per batched network invocation
    frame_features: int = 0  # per-frame feature extractions (GMFSS: once per frame when cached)

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


class ModelFrame:
    """A padded 1x3xHxW BGR float frame plus the per-frame features models computed for it.

    Models fill ``cache`` (keyed by model name and scale) so that work that depends on one
    frame alone is done once, however many pairs the frame takes part in.
    """

    __slots__ = ("tensor", "cache")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.cache: dict = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)


@dataclass
class PairRequest:
    """Interpolate between ``x`` and ``y`` at each time in ``ts`` (any real t; 0 and 1 are evaluated)."""

    x: ModelFrame
    y: ModelFrame
    ts: list[float] = field(default_factory=list)


def split_requests(requests: Sequence[PairRequest], limit: int, whole_pairs: bool = False) -> list[list[PairRequest]]:
    """Chunks of at most ``limit`` evaluations, keeping order; a pair with more times is split by time,
    or, with ``whole_pairs`` (to keep its per-pair work shared), goes alone into a chunk of its own."""
    chunks: list[list[PairRequest]] = []
    current: list[PairRequest] = []
    used = 0
    for r in requests:
        pieces = [r] if whole_pairs or len(r.ts) <= limit else [
            PairRequest(r.x, r.y, r.ts[i:i + limit]) for i in range(0, len(r.ts), limit)]
        for p in pieces:
            cost = max(1, len(p.ts))
            if current and used + cost > limit:
                chunks.append(current)
                current, used = [], 0
            current.append(p)
            used += cost
    if current or not chunks:
        chunks.append(current)
    return chunks


def split_counts(items: Sequence[T], counts: Sequence[int]) -> list[list[T]]:
    """``items`` cut into consecutive runs of the given lengths, in order; the lengths must add up to all of it."""
    if sum(counts) != len(items):
        raise ValueError(f"{len(items)} results cannot be split into runs of {sum(counts)} in all")
    runs: list[list[T]] = []
    start = 0
    for n in counts:
        runs.append(list(items[start:start + n]))
        start += n
    return runs


def split_per_pair(frames: Sequence[T], requests: Sequence[PairRequest]) -> list[list[T]]:
    """The outputs of every (pair, t) of ``requests``, in order, grouped back by pair (a pair without times gets [])."""
    return split_counts(frames, [len(r.ts) for r in requests])


@runtime_checkable
class PairInterpolator(Protocol):
    """What ``MultiPassDedup`` needs of a model: how to prepare frames for it and batched pairs in, frames out.

    Every ``Interpolator`` satisfies it in process; the daemon's ``ScheduledInterpolator`` does too, running
    ``interpolate_batch`` on its shared scheduler while the wrapped model prepares the frames.
    """

    @property
    def name(self) -> str:
        """The model's registered name (``rife``, ``gmfss``, ...)."""

    def alignment(self, scale: float = 1.0) -> int:
        """Frame sizes the model accepts at this flow scale are multiples of this."""

    def to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        """An HxWx3 RGB frame as the model's 1x3xHxW BGR tensor on its device, in its dtype."""

    def held_frame_bytes(self, height: int, width: int, scale: float = 1.0, features: bool = True) -> int:
        """Memory one frame of this size costs while a pipeline holds it (see ``Interpolator``)."""

    def interpolate_batch(self, requests: Sequence[PairRequest], scale: float = 1.0) -> list[list[torch.Tensor]]:
        """One list of output tensors per request, one per time in its ``ts``."""


# Layers that compute in fp32 under autocast (and need fp32 weights there): normalisation.
_FP32_LAYERS = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm,
                torch.nn.modules.instancenorm._InstanceNorm)


def reduced_copy(net: torch.nn.Module, dtype: torch.dtype, keep: set[int]) -> torch.nn.Module:
    """A copy of ``net`` with its weights in ``dtype``, but for the modules whose ``id`` is in ``keep`` (fp32
    islands) and normalisation layers, which keep fp32 weights."""
    copied = copy.deepcopy(net)
    ids = {id(m): m2 for m, m2 in zip(net.modules(), copied.modules())}
    kept = {id(ids[i]) for i in keep if i in ids}
    for module in copied.modules():
        if id(module) in kept or isinstance(module, _FP32_LAYERS):
            continue
        for param in module.parameters(recurse=False):
            param.data = param.data.to(dtype)
    return copied


class Interpolator(ABC):
    """A loaded frame-interpolation network on one device.

    Frames are ``ModelFrame``s wrapping 1x3xHxW BGR float tensors in [0, 1] with H and W a
    multiple of ``alignment(scale)``; ``interpolate`` is the array-level convenience that
    pads and crops itself.
    """

    name: str = ""
    base_alignment: int = 64
    # On a CPU a batch larger than the caches runs slower than its parts: evaluations x pixels per
    # network invocation are capped there (measured by bench/speed.py). A GPU takes any batch.
    cpu_batch_pixels: int | None = None
    # The precisions whose quality was measured (core/precision.py); a model lists bf16/fp16 only once it
    # has its fp32 islands. ``auto_cpu_bf16``: whether ``auto`` picks bf16 on a CPU that computes it natively
    # (its picture against ground truth within 0.1 dB of fp32 and its golden pairs at 40 dB or more), and
    # the measured reason either way, which the log says.
    precisions: tuple[str, ...] = ("fp32",)
    auto_cpu_bf16: tuple[bool, str] = (False, "its picture in bf16 is not measured")
    # Device type -> the precisions the networks run in channels-last memory format in there (decided by
    # bench/speed.py: oneDNN's bf16 kernels want it, fp32 ones gain or lose a little, depending on the model).
    channels_last_in: dict[str, tuple[str, ...]] = {}

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device = device
        self.dtype = dtype  # of the weights and of the frames the pipeline holds (fp32 in every precision)
        self.precision = "fp32"  # of the arithmetic: network calls run under autocast to it
        self.precision_reason = "default"
        self.channels_last = False  # set by ``use_channels_last`` once the networks exist
        self._fp32_networks: dict[str, torch.nn.Module] | None = None  # the networks as loaded (set_precision)
        self.stats = CallStats()
        self.max_batch_pixels = self.cpu_batch_pixels if device.type == "cpu" else None

    def networks(self) -> dict[str, torch.nn.Module]:
        """The model's networks: its ``nn.Module`` attributes, by attribute name."""
        return {name: value for name, value in vars(self).items() if isinstance(value, torch.nn.Module)}

    def use_channels_last(self, on: bool | None = None) -> None:
        """Put the networks in channels-last memory format, or back.

        ``None``: as decided for this model on its device in its precision (``channels_last_in``). The outputs
        do not change beyond fp32 reordering (86-98 dB on the golden pairs); only the speed does.
        """
        on = self.precision in self.channels_last_in.get(self.device.type, ()) if on is None else on
        layout = torch.channels_last if on else torch.contiguous_format
        for net in self.networks().values():
            net.to(memory_format=layout)
        for module in self.contiguous_modules():
            module.to(memory_format=torch.contiguous_format)
        self.channels_last = on

    def contiguous_modules(self) -> list[torch.nn.Module]:
        """Parts of the networks that stay in contiguous memory format when the rest runs channels-last
        (measured faster so)."""
        return []

    def networks_as_loaded(self) -> dict[str, torch.nn.Module]:
        """The fp32 networks the model was loaded with (those of every precision are made from them)."""
        return self.networks() if self._fp32_networks is None else dict(self._fp32_networks)

    def fp32_modules(self, precision: str) -> list[torch.nn.Module]:
        """The parts of the networks that run as fp32 islands in ``precision``: their weights stay fp32."""
        return []

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the network calls compute in (outside their fp32 islands)."""
        return DTYPES[self.precision]

    def set_precision(self, choice: PrecisionChoice) -> None:
        """Run the network calls in ``choice.precision`` from now on (one of ``precisions``).

        In bf16/fp16 the networks are copies whose weights are in that dtype (but for the fp32 islands and
        the normalisation layers, which compute in fp32): autocast would otherwise convert every weight on
        every call, which costs as much as the convolution itself on a CPU. The fp32 networks as loaded
        are kept, so a model serves any of its precisions (``with_precision``). Channels-last is then set
        as decided for this precision (``channels_last_in``).
        """
        if choice.precision not in self.precisions:
            raise ValueError(f"{self.name} runs in {'/'.join(self.precisions)} only, got {choice.precision}")
        self._fp32_networks = self.networks_as_loaded()
        self.precision, self.precision_reason = choice.precision, choice.reason
        for name, net in self._fp32_networks.items():
            setattr(self, name, net)
        if choice.precision != "fp32":
            keep = {id(m) for island in self.fp32_modules(choice.precision) for m in island.modules()}
            for name, net in self._fp32_networks.items():
                setattr(self, name, reduced_copy(net, DTYPES[choice.precision], keep))
        self.use_channels_last()

    def with_precision(self, choice: PrecisionChoice) -> Interpolator:
        """This model in another precision, sharing its networks and counters (the daemon serves both)."""
        other = copy.copy(self)
        other.set_precision(choice)
        return other

    @classmethod
    def from_files(cls, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> Interpolator:
        """Build the networks from weight files by role (the roles of the model's ``WeightFiles``) on ``device``.

        Models that ``load_model`` builds define it; the registry calls it with the verified files.
        """
        raise NotImplementedError(f"{cls.__name__} is not built from weight files")

    def alignment(self, scale: float = 1.0) -> int:
        """Frame sizes the network accepts at this flow scale are multiples of this."""
        return max(32, int(self.base_alignment / check_scale(scale)))

    def to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        return to_tensor(frame, self.device, self.dtype)

    def cached_channels(self, scale: float = 1.0) -> float:
        """What the model caches per frame in ``ModelFrame.cache``, in channels per padded frame pixel."""
        return 0.0

    def held_frame_bytes(self, height: int, width: int, scale: float = 1.0, features: bool = True) -> int:
        """Memory one frame of this size costs while a pipeline holds it: its padded tensor and, with
        ``features``, what the model caches for it (on the model's device, in its dtype)."""
        align = self.alignment(scale)
        pixels = (-(-height // align) * align) * (-(-width // align) * align)
        channels = 3 + (self.cached_channels(scale) if features else 0.0)
        return int(pixels * channels * torch.empty(0, dtype=self.dtype).element_size())

    @torch.inference_mode()
    def interpolate_batch(self, requests: Sequence[PairRequest], scale: float = 1.0) -> list[list[torch.Tensor]]:
        """Outputs for several independent pairs (all the same shape) in as few network calls as possible."""
        scale = check_scale(scale)
        todo = [r for r in requests if r.ts]
        frames: list[torch.Tensor] = []
        if todo:
            shapes = {r.x.shape for r in todo} | {r.y.shape for r in todo}
            if len(shapes) != 1:
                raise ValueError(f"a batch must hold frames of one shape, got {sorted(shapes)}")
            self.stats.pairs += len(todo)
            self.stats.model_calls += sum(len(r.ts) for r in todo)
            if self.max_batch_pixels is None:
                chunks = [todo]
            else:
                frame_pixels = todo[0].x.shape[2] * todo[0].x.shape[3]
                chunks = split_requests(todo, max(1, self.max_batch_pixels // frame_pixels), whole_pairs=True)
            for chunk in chunks:
                self.stats.batches += 1
                with autocast(self.device, self.precision):
                    outputs = self._infer_batch(chunk, scale)
                # Outputs feed later passes as frames: fp32 like the reference's, whatever the arithmetic.
                frames += [f.to(self.dtype) for pair in outputs for f in pair]
        return split_per_pair(frames, requests)

    def interpolate_tensors(self, x: torch.Tensor, y: torch.Tensor, ts: Sequence[float],
                            scale: float = 1.0) -> list[torch.Tensor]:
        """Model output at each t in ``ts`` for one pair of tensors."""
        return self.interpolate_batch([PairRequest(ModelFrame(x), ModelFrame(y), list(ts))], scale)[0]

    @abstractmethod
    def _infer_batch(self, requests: list[PairRequest], scale: float) -> list[list[torch.Tensor]]:
        """Run the network for several pairs, each at one or more times; one list of 1x3xHxW per pair."""

    def interpolate(self, f0: np.ndarray, f1: np.ndarray, ts: Sequence[float], scale: float = 1.0) -> list[np.ndarray]:
        """HxWx3 uint8/uint16 RGB frames in, one frame of the same size and dtype per t out."""
        check_frame(f0)
        check_frame(f1)
        if f0.shape != f1.shape or f0.dtype != f1.dtype:
            raise ValueError(f"frames differ: {f0.shape} {f0.dtype} vs {f1.shape} {f1.dtype}")
        padder = Padder(f0.shape[0], f0.shape[1], self.alignment(scale))
        x = padder.pad(self.to_tensor(f0))
        y = padder.pad(self.to_tensor(f1))
        outs = self.interpolate_tensors(x, y, ts, scale)
        return [to_array(padder.crop(o), f0.dtype) for o in outs]
