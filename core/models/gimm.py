"""The ``gimm`` interpolator: GIMM-VFI-R (RAFT both ways + implicit motion field + AMT-style decoder).

Work is split by what it depends on, and each part runs once for everything that shares it:

- per frame (cached in ``ModelFrame.cache``): RAFT's encoders and the projected image features, at the
  flow scale;
- per pair: RAFT in both directions (20 iterations), the motion latents, splatting weights, the
  bidirectional correlation pyramid;
- per (pair, t), batched over the pair's times: the motion field's flow at ``t`` and the decoder.

``scale`` is the original's ``ds_factor``: the flows are estimated and the frame is decoded at ``scale`` of
the (padded) frame size, and the final warp runs at full size. On CUDA each call's memory is estimated
first (``call_bytes``); when it does not fit, the times of a pair are split over several calls and, if
even one time does not fit, the flow scale is lowered (logged once per frame size). The final warp and
blend run at full size whatever the flow scale, so lowering has a floor (about 0.5 KB per frame pixel); a
pair that does not fit even there is refused with ``GimmMemoryError``, before anything is allocated.

At ``t`` = 0 or 1 the network is not evaluated (it divides by ``t`` and ``1 - t``): the input frame is the
output, as the original program returns it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ...settings import ALLOWED_SCALES
from ...weights import WeightFiles
from ...weights.errors import WeightsError
from ..layers.softsplat import SoftmaxSplatter
from ..networks.gimm import GimmFrame, GimmVfiR
from ..networks.raft import CORR_LEVELS
from .base import Interpolator, ModelFrame, PairRequest, check_scale
from .registry import register_model

# The user brings both files (the original program's names); nothing fetches them.
WEIGHTS = WeightFiles(
    roles={"raft": "raft-things.pth", "gimm": "gimmvfi_r_arb_lpips.pt"},
    source="the GIMM-VFI project's release (github.com/GSeanCDAT/GIMM-VFI)")

log = logging.getLogger(__name__)

RAFT_PREFIX = "flow_estimator."
# What GimmFrame holds per flow-scale pixel: the scaled image (3), and at 1/8 the matching features (256),
# GRU state and input (128 + 128), projected 1/8 features (256) and projected matching features (256),
# and at 1/4 the projected 1/4 features (128).
FRAME_CHANNELS = 3 + (256 + 128 + 128 + 256 + 256) / 64 + 128 / 16
# The correlation volumes' pyramids relative to their first level: 1 + 1/4 + 1/16 + 1/64.
PYRAMID_FACTOR = sum(0.25 ** level for level in range(CORR_LEVELS))
# Per-pair tensors besides the correlation, per flow-scale pixel: lifted features of both frames for the
# final decoder (2 x 64) and the first (2 x 128 at 1/4), flows, motion latents and splatting weights (38),
# and the decoder's per-call inputs (the frames at the flow scale and 1/4, coordinate grids: about 20).
PAIR_CHANNELS = 2 * 64 + 2 * 128 / 16 + 38 + 20
# Per time t, per flow-scale pixel, the peak of the final decoder (measured on the CPU: 1730): about five
# live 256-channel activations in its residual blocks (block input, conv output, activation, the rebuilt
# input of the next conv, and a layout copy the convolution makes), its 273-channel input and the
# 128-channel upsampled feature, plus the flows and masks of the time (48).
STEP_CHANNELS = 5 * 256 + 273 + 128 + 48
# Per time t, per full-size pixel, the final blend (measured: 125): three flow pairs resized to full size,
# masks and residuals (24), the frames stacked three times (18), sampling grids and normalised flows (18),
# the warped candidates and their blends (about 60). It runs after the decoder's activations are freed, so
# a call's per-time peak is the larger of the two.
BLEND_CHANNELS = 125
# Small tensors and allocator slack that do not grow with the frame (measured: a few MB).
CALL_OVERHEAD_BYTES = 8 * 2 ** 20
# Memory the estimate leaves free on a CUDA device, for the allocator's rounding and kernels' workspaces.
CUDA_HEADROOM = 1.25


class GimmWeightsError(WeightsError):
    """A GIMM-VFI weight file is unreadable, has the wrong shapes, or the two files leave weights unset."""


class GimmMemoryError(MemoryError):
    """A pair needs more device memory than is free even at the lowest flow scale (a MemoryError, so the daemon
    ends the session as out of memory and keeps serving the others)."""


@dataclass(frozen=True)
class CallPlan:
    """How one pair runs: the flow scale actually used and how many times ``t`` go through the decoder at once;
    ``fits`` is False when not even one time at the lowest flow scale fits the memory available."""

    scale: float
    times_per_call: int
    fits: bool = True


@register_model(WEIGHTS)
class GimmInterpolator(Interpolator):
    """GIMM-VFI-R on one device; ``net`` holds the weights (see ``from_files``)."""

    name = "gimm"
    base_alignment = 64  # the original pads to 64 / scale
    cpu_batch_pixels = 2 ** 16  # two times at 256x128 per decoder call: its activations are large

    def __init__(self, net: GimmVfiR, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(device, dtype)
        self.net = net.to(device=device, dtype=dtype).eval()
        self.pair_work_runs = 0  # per-pair work (RAFT both ways, motion encoding) done, for tests and benchmarks
        self._reported_plans: set[tuple[int, int, float, float]] = set()

    @classmethod
    def from_files(cls, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> GimmInterpolator:
        """Build from the original's two files: ``raft`` (``raft-things.pth``, a RAFT state dict, usually with
        DataParallel's ``module.`` prefix) loaded into the flow estimator, then ``gimm``
        (``gimmvfi_r_arb_lpips.pt``, ``{"state_dict": ...}``) loaded on top; every weight must end up set."""
        net = GimmVfiR(SoftmaxSplatter().splat_sum)
        expected = set(net.state_dict())
        raft = _read(files["raft"])
        raft = {k.removeprefix("module."): v for k, v in raft.items()}
        raft = {k.removeprefix(RAFT_PREFIX): v for k, v in raft.items()}
        loaded = _load(net.flow_estimator, raft, files["raft"])
        loaded = {RAFT_PREFIX + k for k in loaded}
        checkpoint = _read(files["gimm"], nested="state_dict")
        checkpoint = {k.removeprefix("module."): v for k, v in checkpoint.items()}
        loaded |= _load(net, checkpoint, files["gimm"])
        unset = sorted(expected - loaded)
        if unset:
            shown = ", ".join(unset[:8]) + (f" and {len(unset) - 8} more" if len(unset) > 8 else "")
            raise GimmWeightsError(f"gimm weights incomplete: {files['raft'].name} and {files['gimm'].name} "
                                   f"leave {len(unset)} tensors unset: {shown}")
        return cls(net, device, dtype)

    # -- memory ----------------------------------------------------------------------------------

    def cached_channels(self, scale: float = 1.0) -> float:
        """The GimmFrame cached per frame, per padded frame pixel (it lives at the flow scale)."""
        return FRAME_CHANNELS * check_scale(scale) ** 2

    def call_bytes(self, height: int, width: int, scale: float = 1.0, times: int = 1) -> int:
        """Peak memory of one pair at ``times`` times ``t`` in one decoder call, for frames of this (padded) size.

        The dominant terms: the bidirectional correlation pyramid (two (H/8 * W/8)^2 float32 volumes at the
        flow scale with their pooled levels, alive until the pair is done; RAFT's two one-way pyramids before
        it are as large), and per time the decoder's activations at the flow scale or the blend at full size;
        then the frames' cached work and the per-pair tensors. Checked against the CPU's real peak in
        tests/test_gimm.py."""
        element = torch.empty(0, dtype=self.dtype).element_size()
        pixels = height * width
        flow_pixels = pixels * check_scale(scale) ** 2
        coarse = flow_pixels / 64  # pixels of the 1/8 grid
        correlation = 2 * PYRAMID_FACTOR * coarse ** 2
        per_pair = (2 * FRAME_CHANNELS + PAIR_CHANNELS) * flow_pixels
        per_time = max(STEP_CHANNELS * flow_pixels, BLEND_CHANNELS * pixels) + 3 * pixels  # + the output frame
        return int(4 * correlation + element * (per_pair + times * per_time)) + CALL_OVERHEAD_BYTES

    def _available_bytes(self) -> int | None:
        """Free memory on the model's CUDA device (the driver's free memory plus PyTorch's unused cache);
        None on the CPU, where the daemon's memory budget governs."""
        if self.device.type != "cuda":
            return None
        free, _total = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return free + cached

    def plan(self, height: int, width: int, scale: float, times: int, available: int | None) -> CallPlan:
        """The flow scale and times per decoder call for a pair of this size: the requested scale with as many
        times per call as fit (with ``CUDA_HEADROOM`` to spare), else lower scales (down to 1/8 of the requested
        one, which the padding still divides) with one time per call; else the lowest scale, marked as not
        fitting when its estimate exceeds even the whole of ``available``. ``available`` None means no limit
        but the CPU batch cap. A pure function of its arguments and the model's batch cap."""
        cap = times if self.max_batch_pixels is None else max(1, min(times, self.max_batch_pixels // (height * width)))
        if available is None:
            return CallPlan(scale, cap)
        budget = available / CUDA_HEADROOM
        for per_call in range(cap, 0, -1):
            if self.call_bytes(height, width, scale, per_call) <= budget:
                return CallPlan(scale, per_call)
        lower = [s for s in sorted(ALLOWED_SCALES, reverse=True) if scale / 8 <= s < scale]
        for candidate in lower:
            if self.call_bytes(height, width, candidate, 1) <= budget:
                return CallPlan(candidate, 1)
        lowest = lower[-1] if lower else scale
        return CallPlan(lowest, 1, fits=self.call_bytes(height, width, lowest, 1) <= available)

    def _check_plan(self, height: int, width: int, scale: float, plan: CallPlan, available: int) -> None:
        """Say once per frame size and scale that the flow scale was lowered to fit the device; refuse a pair
        that does not fit even at the lowest scale, in one line, before any of its work is done."""
        if not plan.fits:
            needed = self.call_bytes(height, width, plan.scale, 1)
            raise GimmMemoryError(
                f"gimm: a {width}x{height} pair needs about {needed / 2 ** 30:.1f} GiB even at flow scale "
                f"{plan.scale} (its final warp runs at full size), and {available / 2 ** 30:.1f} GiB is free on "
                f"{self.device}: use smaller frames, another model or a device with more memory")
        key = (height, width, scale, plan.scale)
        if plan.scale == scale or key in self._reported_plans:
            return
        self._reported_plans.add(key)
        needed = self.call_bytes(height, width, scale, 1)
        fits = self.call_bytes(height, width, plan.scale, 1) * CUDA_HEADROOM <= available
        log.warning("gimm: a %dx%d pair at scale %s needs about %.1f GiB, %.1f GiB is free on %s; estimating flow "
                    "at scale %s instead%s", width, height, scale, needed / 2 ** 30, available / 2 ** 30,
                    self.device, plan.scale, "" if fits else " (it may still not fit)")

    # -- the work --------------------------------------------------------------------------------

    def _frame_work(self, frames: list[ModelFrame], scale: float) -> list[GimmFrame]:
        """Each frame's GimmFrame at ``scale``, computing in one batch only what the cache does not hold."""
        key = (self.name, scale)
        missing = {id(f): f for f in frames if key not in f.cache}
        if missing:
            todo = list(missing.values())
            batch = todo[0].tensor if len(todo) == 1 else torch.cat([f.tensor for f in todo])
            for frame, work in zip(todo, self.net.encode_frames(batch, scale)):
                frame.cache[key] = work
            self.stats.frame_features += len(todo)
        return [f.cache[key] for f in frames]

    def _infer_pair(self, request: PairRequest, scale: float) -> list[torch.Tensor]:
        x, y = request.x.tensor, request.y.tensor
        h, w = x.shape[2:]
        outputs: dict[int, torch.Tensor] = {}
        inner = []
        for i, t in enumerate(request.ts):
            if t == 0.0:
                outputs[i] = x.clone()
            elif t == 1.0:
                outputs[i] = y.clone()
            else:
                inner.append(i)
        if inner:
            available = self._available_bytes()
            plan = self.plan(h, w, scale, len(inner), available)
            if available is not None:
                self._check_plan(h, w, scale, plan, available)
            frame0, frame1 = self._frame_work([request.x, request.y], plan.scale)
            pair = self.net.pair_motion(frame0, frame1)
            self.pair_work_runs += 1
            field_size = (int(h * plan.scale), int(w * plan.scale))
            for start in range(0, len(inner), plan.times_per_call):
                chunk = inner[start:start + plan.times_per_call]
                t = torch.tensor([request.ts[i] for i in chunk], dtype=torch.float32, device=self.device)
                flow_t = self.net.flow_at(pair, t.to(self.dtype), field_size)
                frames = self.net.synthesize(frame0, frame1, pair, flow_t, t.to(self.dtype), x, y)
                outputs.update(zip(chunk, frames.split(1)))
            del pair
        return [outputs[i] for i in range(len(request.ts))]

    def _infer_batch(self, requests: list[PairRequest], scale: float) -> list[list[torch.Tensor]]:
        h, w = requests[0].x.shape[2:]
        multiple = self.alignment(scale)
        if h % multiple or w % multiple:
            raise ValueError(f"gimm needs frame sizes that are multiples of {multiple} at scale {scale}, got {w}x{h}")
        # One pair at a time: the per-pair correlation volumes are the largest tensors, and a pair's times
        # already share one decoder batch.
        return [self._infer_pair(r, scale) for r in requests]


def _read(path: Path, nested: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (or its ``nested`` entry when the file holds a dict with one)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pickle, zip and torch errors: one line naming the file
        reason = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
        if path.stat().st_size == 0:
            reason = "the file is empty"
        raise GimmWeightsError(f"cannot read gimm weight file {path}: {reason}") from exc
    if nested is not None and isinstance(data, dict) and isinstance(data.get(nested), dict):
        data = data[nested]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise GimmWeightsError(f"gimm weight file {path} does not hold a state dict")
    return data


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> set[str]:
    """Load the keys of ``state`` that ``module`` has (others are ignored, as the original loads non-strictly);
    returns the keys loaded. A shape mismatch is an error naming the file and the key."""
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    for k, v in usable.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise GimmWeightsError(f"gimm weight file {path}: {k} has shape {tuple(v.shape)}, "
                                   f"expected {tuple(own[k].shape)}")
    module.load_state_dict(usable, strict=False)
    return set(usable)
