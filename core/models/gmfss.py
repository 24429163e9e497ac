"""The ``gmfss`` interpolator: GMFSS "union" (GMFlow + MetricNet + FeatureNet + softmax splatting + IFNet + GridNet).

Work is split by what it depends on, and each part runs once for everything that shares it:

- per frame (cached in ``ModelFrame.cache`` unless ``cache_frame_features`` is off): FeatureNet
  pyramid, the half-size image, GMFlow's backbone features;
- per pair (one batch for all pairs of a call): GMFlow matching in both directions, MetricNet;
- per (pair, t) (one batch for all of them): softmax splatting, IFNet at half size, GridNet fusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...weights import ORIGINAL_LAYOUT_DIR, WeightFiles, load_state_dict
from ..layers.softsplat import SoftmaxSplatter
from ..networks.gmflow import FEATURE_CHANNELS, PARTS, UPSAMPLE_FACTOR, FlowFeatures, GMFlow, pieces_at
from ..networks.gmfss_nets import FeatureNet, GridNet, MetricNet
from ..networks.rife_ifnet import IFNet
from ..precision import DTYPES, PrecisionChoice
from .base import Interpolator, ModelFrame, PairRequest, check_scale, reduced_copy, split_per_pair
from .registry import register_model

# The union weights; the original layout names them without the "_union" suffix.
WEIGHTS = WeightFiles(
    roles={"flownet": "flownet.pkl", "ifnet": "rife.pkl", "metricnet": "metric_union.pkl",
           "featnet": "feat_union.pkl", "fusionnet": "fusionnet_union.pkl"},
    original_dir=ORIGINAL_LAYOUT_DIR,
    original_names={"flownet": "flownet.pkl", "ifnet": "rife.pkl", "metricnet": "metric.pkl",
                    "featnet": "feat.pkl", "fusionnet": "fusionnet.pkl"},
)
IFNET_SCALES = (8, 4, 2, 1)  # the reference runs IFNet on the half-size frames with fixed scales


@dataclass
class FrameWork:
    """What GMFSS computes from one frame alone (each tensor has a batch of 1)."""

    half: torch.Tensor  # the frame at half size, the resolution of flows, splatting and IFNet
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # FeatureNet at 1/2, 1/4, 1/8
    flow_features: FlowFeatures  # GMFlow backbone of the (scaled) half-size frame


@dataclass
class PairWork:
    """Per-pair results for a batch of P pairs: flows both ways and splatting metrics, at half size."""

    flow01: torch.Tensor
    flow10: torch.Tensor
    metric0: torch.Tensor
    metric1: torch.Tensor


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    return items[0] if len(items) == 1 else torch.cat(items)


@register_model(WEIGHTS)
class GmfssInterpolator(Interpolator):
    name = "gmfss"
    base_alignment = 128  # the reference pads to 128 / scale
    cpu_batch_pixels = 2 ** 16  # one or two pairs at 256x128: per-pair work is memory-heavy
    # bf16 with all of GMFlow fp32 passes the golden pairs, but no bf16 variant passes the golden 3-pass run:
    # each pass amplifies the previous one's rounding (docs/studies/bf16-precision.md).
    precisions = ("fp32", "bf16", "fp16")
    auto_cpu_bf16 = (True, "GMFSS's bf16 picture is within 0.1 dB of fp32 against ground truth, golden pairs >= 40 dB")
    channels_last_in = {"cpu": ("fp32", "bf16")}
    # GMFlow's parts that run as fp32 islands in each precision (core/networks/gmflow.py PARTS). In bf16: the
    # backbone, the coarse-scale transformer, the fine-scale transformer's projections and attention, and the
    # matching head; only the fine scale's feed-forward layers (most of the transformer's work) run in bf16.
    # Each of the fp32 parts in bf16 takes the golden pairs below 40 dB or close to it (docs/design.md,
    # Precision). fp16 (CUDA) keeps all of GMFlow fp32, as measured there.
    GMFLOW_FP32_PARTS = {"fp32": frozenset(PARTS), "fp16": frozenset(PARTS),
                         "bf16": frozenset(PARTS) - {"fine_mlp"}}

    def __init__(self, flownet: GMFlow, ifnet: IFNet, metricnet: MetricNet, featnet: FeatureNet,
                 fusionnet: GridNet, device: torch.device, dtype: torch.dtype = torch.float32,
                 cache_frame_features: bool = True) -> None:
        super().__init__(device, dtype)
        self.flownet = flownet.to(device=device, dtype=dtype).eval()
        self.ifnet = ifnet.to(device=device, dtype=dtype).eval()
        self.metricnet = metricnet.to(device=device, dtype=dtype).eval()
        self.featnet = featnet.to(device=device, dtype=dtype).eval()
        self.fusionnet = fusionnet.to(device=device, dtype=dtype).eval()
        self.cache_frame_features = cache_frame_features
        self.splat = SoftmaxSplatter()
        self.gmflow_fp32_parts = self.GMFLOW_FP32_PARTS["fp32"]
        self.use_channels_last()

    @classmethod
    def from_files(cls, files: dict[str, Path], device: torch.device, dtype: torch.dtype,
                   cache_frame_features: bool = True) -> GmfssInterpolator:
        """Build from weight files by role: flownet, ifnet, metricnet, featnet, fusionnet."""
        nets = {"flownet": GMFlow(), "ifnet": IFNet(), "metricnet": MetricNet(), "featnet": FeatureNet(),
                "fusionnet": GridNet()}
        for role, net in nets.items():
            net.load_state_dict(load_state_dict(files[role]))
        return cls(**nets, device=device, dtype=dtype, cache_frame_features=cache_frame_features)

    def set_precision(self, choice: PrecisionChoice) -> None:
        """As ``Interpolator.set_precision``; where GMFlow's transformer keeps other pieces fp32 at the fine scale
        than at the coarse one, the fine scale gets its own copy of it with those pieces' weights fp32."""
        parts = self.gmflow_fp32_parts = self.GMFLOW_FP32_PARTS[choice.precision]
        super().set_precision(choice)
        fine = pieces_at("fine", parts)
        if choice.precision != "fp32" and fine != pieces_at("coarse", parts):
            master = self.networks_as_loaded()["flownet"].transformer
            keep = {id(m) for piece in master.piece_modules(fine) for m in piece.modules()}
            self.flownet.fine_transformer = reduced_copy(master, DTYPES[choice.precision], keep)
            self.use_channels_last()

    def contiguous_modules(self) -> list[torch.nn.Module]:
        """GMFlow's CNN backbone: its instance norms copy channels-last tensors to contiguous and back, which
        makes it 10-25 % slower in channels-last (fp32, bench/speed.py's per-part timing)."""
        return [self.flownet.backbone]

    def fp32_modules(self, precision: str) -> list[torch.nn.Module]:
        """GMFlow's parts that stay fp32 in ``precision`` (``GMFLOW_FP32_PARTS``)."""
        return self.flownet.part_modules(self.GMFLOW_FP32_PARTS[precision])

    def alignment(self, scale: float = 1.0) -> int:
        """128 / scale as the reference pads, but never below the 64 that IFNet on the half-size frame needs."""
        return max(64, int(self.base_alignment / check_scale(scale)))

    def cached_channels(self, scale: float = 1.0) -> float:
        """FrameWork per padded pixel: the half-size frame, FeatureNet's pyramid (1/2, 1/4, 1/8 size) and
        GMFlow's backbone (1/8 and 1/4 of the half-size frame at ``scale``)."""
        if not self.cache_frame_features:
            return 0.0
        pyramid = sum(c / 4 ** (level + 1) for level, c in enumerate(FeatureNet.CHANNELS))
        flow_input = check_scale(scale) ** 2 / 4  # the half-size frame resized by ``scale``
        flow = FEATURE_CHANNELS * flow_input * (1 / 8 ** 2 + 1 / UPSAMPLE_FACTOR ** 2)
        return 3 / 4 + pyramid + flow

    @staticmethod
    def required_multiple(scale: float) -> int:
        """The size multiple the networks themselves need (half size / 32 for IFNet, flow windows at scale)."""
        return max(64, int(64 / scale))

    # -- per frame -------------------------------------------------------------------------------

    def _compute_frames(self, frames: torch.Tensor, scale: float) -> list[FrameWork]:
        """FrameWork for each frame of an (N,3,H,W) batch."""
        features = self.featnet(frames)
        half = _resize(frames, 0.5)
        flow_features = self.flownet.encode(half if scale == 1.0 else _resize(half, scale), self.gmflow_fp32_parts)
        self.stats.frame_features += frames.shape[0]
        n = frames.shape[0]

        def own(x: torch.Tensor, i: int) -> torch.Tensor:  # a copy, so one cached frame does not pin the batch
            return x if n == 1 else x[i:i + 1].clone()

        return [FrameWork(own(half, i), tuple(own(f, i) for f in features),
                          FlowFeatures(*(own(f, i) for f in flow_features))) for i in range(n)]

    def _frame_work(self, requests: list[PairRequest], scale: float) -> tuple[list[FrameWork], list[FrameWork]]:
        """FrameWork of every x and every y, computing in one batch only what the cache does not hold."""
        if not self.cache_frame_features:
            tensors = [r.x.tensor for r in requests] + [r.y.tensor for r in requests]
            work = self._compute_frames(_stack(tensors), scale)
            return work[:len(requests)], work[len(requests):]
        key = (self.name, scale)
        missing: dict[int, ModelFrame] = {}
        for frame in (f for r in requests for f in (r.x, r.y)):
            if key not in frame.cache:
                missing.setdefault(id(frame), frame)
        if missing:
            frames = list(missing.values())
            for frame, work in zip(frames, self._compute_frames(_stack([f.tensor for f in frames]), scale)):
                frame.cache[key] = work
        return [r.x.cache[key] for r in requests], [r.y.cache[key] for r in requests]

    # -- per pair --------------------------------------------------------------------------------

    def _pair_work(self, xs: list[FrameWork], ys: list[FrameWork], scale: float) -> PairWork:
        a = FlowFeatures(*(_stack([w.flow_features[i] for w in xs]) for i in range(2)))
        b = FlowFeatures(*(_stack([w.flow_features[i] for w in ys]) for i in range(2)))
        flow01, flow10 = self.flownet.bidirectional_flow(a, b, self.gmflow_fp32_parts)
        if scale != 1.0:
            flow01 = _resize(flow01, 1.0 / scale) / scale
            flow10 = _resize(flow10, 1.0 / scale) / scale
        half0, half1 = _stack([w.half for w in xs]), _stack([w.half for w in ys])
        metric0, metric1 = self.metricnet(half0, half1, flow01, flow10)
        return PairWork(flow01, flow10, metric0, metric1)

    # -- per (pair, t) ---------------------------------------------------------------------------

    def _synthesise(self, xs: list[FrameWork], ys: list[FrameWork], pairs: PairWork, pair_of: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
        """Frames at times ``t`` (T,1,1,1) of pairs ``pair_of`` (T,): one batch through splatting, IFNet, fusion."""
        n = t.shape[0]

        def gather(items: list[torch.Tensor]) -> torch.Tensor:
            return _stack(items).index_select(0, pair_of)

        half0, half1 = gather([w.half for w in xs]), gather([w.half for w in ys])
        # Both directions in one batch: frame 0 forward by t*flow01, frame 1 back by (1-t)*flow10.
        flow = torch.cat([t * pairs.flow01.index_select(0, pair_of), (1 - t) * pairs.flow10.index_select(0, pair_of)])
        metric = torch.cat([t * pairs.metric0.index_select(0, pair_of),
                            (1 - t) * pairs.metric1.index_select(0, pair_of)])
        levels = []
        for level in range(3):
            values = torch.cat([gather([w.features[level] for w in xs]), gather([w.features[level] for w in ys])])
            if level == 0:  # the images share the half-size flow with the first feature level
                values = torch.cat([torch.cat([half0, half1]), values], 1)
                splatted = self.splat(values, flow, metric)
            else:
                factor = 0.5 ** level
                splatted = self.splat(values, _resize(flow, factor) * factor, _resize(metric, factor))
            levels.append(splatted)
        first = levels[0]
        img0t, img1t = first[:n, :3], first[n:, :3]
        rife = self.ifnet(half0, half1, t, IFNET_SCALES)
        feats = [torch.cat([lv[:n], lv[n:]], 1) for lv in (first[:, 3:], levels[1], levels[2])]
        out = self.fusionnet(torch.cat([img0t, rife, img1t], 1), *feats)
        return out.float().clamp(0, 1)

    def _infer_batch(self, requests: list[PairRequest], scale: float) -> list[list[torch.Tensor]]:
        h, w = requests[0].x.shape[2:]
        multiple = self.required_multiple(scale)
        if h % multiple or w % multiple:
            raise ValueError(f"gmfss needs frame sizes that are multiples of {multiple} at scale {scale}, got {w}x{h}")
        xs, ys = self._frame_work(requests, scale)
        pairs = self._pair_work(xs, ys, scale)
        pair_of = torch.tensor([i for i, r in enumerate(requests) for _ in r.ts], device=self.device)
        t = torch.tensor([t for r in requests for t in r.ts], dtype=self.dtype, device=self.device).view(-1, 1, 1, 1)
        return split_per_pair(self._synthesise(xs, ys, pairs, pair_of, t).split(1), requests)
