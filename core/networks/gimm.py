"""GIMM-VFI-R (Guo et al. 2024, "Generalizable Implicit Motion Modeling for Video Frame Interpolation").

RAFT flows both ways, a motion encoder, an implicit motion field queried at each time ``t``, and an
AMT-style decoder that turns the flow at ``t`` into the frame. State-dict compatible with the
reference ``GIMMVFI_R`` (configuration ``gimmvfi_r_arb.yaml``): the attribute names below are the
checkpoint's keys, which is why some of them (``amt_*``, ``hyponet.params_dict``) are the reference's.

The computation is split by what it depends on, so the interpolator can share it:

- ``encode_frames`` (per frame): RAFT's encoders and the projected image features;
- ``pair_motion`` (per pair): RAFT both ways (20 iterations), the motion latents of the normalised
  flows, the splatting weights, the bidirectional correlation pyramid, the decoders' lifted features;
- ``synthesize`` (per time ``t``, batched): splat the latents to ``t``, query the motion field for the
  flow at ``t``, and decode the frame.

Numerics follow the reference where they matter: bilinear resizes with ``align_corners=False``,
backward warps with ``align_corners=True`` and border padding, forward warps by *linear* splatting
with the ``zeroeps`` normalisation (an empty target keeps 0 rather than dividing by an epsilon),
the motion field's inputs ``(latent, t, y, x)`` with pixel-centre coordinates in [-1, 1], and its
layer weights normalised per output unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.warp import BackWarp
from .raft import RAFT, CorrelationPyramid, FrameEncoding, all_pairs_correlation, coords_grid

RAFT_ITERATIONS = 20
NUM_FLOWS = 3  # the final decoder predicts three flow pairs, blended by the combination block
LATENT_DIM = 16  # motion latent channels per direction
MLP_WIDTH = 128
MLP_LAYERS = 5
MLP_OUTPUT_BIAS = 0.5  # the field outputs normalised flow in [0, 1] around this bias

SplatSum = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor`` (align_corners=False), as every resize of the reference."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _conv_prelu(cin: int, cout: int, kernel: int = 3, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, 1, padding), nn.PReLU(cout))


class LateralBlock(nn.Module):
    """conv-LeakyReLU-conv with a residual connection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
                                    nn.Conv2d(dim, dim, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + x


def _motion_encoder(in_dim: int, channel: int, lateral_blocks: int) -> nn.Sequential:
    """conv, conv, LeakyReLU, lateral blocks, LeakyReLU, reflect-padded conv to ``channel // 2``."""
    return nn.Sequential(
        nn.Conv2d(in_dim, channel // 2, 3, 1, 1), nn.Conv2d(channel // 2, channel, 3, 1, 1),
        nn.LeakyReLU(0.1, inplace=True), *[LateralBlock(channel) for _ in range(lateral_blocks)],
        nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(channel, channel // 2, 3, 1, 1, padding_mode="reflect"))


class ResBlock(nn.Module):
    """AMT's residual block: the last ``side`` channels get an extra conv between the main convs."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.conv1 = _conv_prelu(channels, channels)
        self.conv2 = _conv_prelu(side, side)
        self.conv3 = _conv_prelu(channels, channels)
        self.conv4 = _conv_prelu(side, side)
        self.conv5 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.prelu = nn.PReLU(channels)

    def _side(self, x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        return torch.cat([x[:, :-self.side], conv(x[:, -self.side:])], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self._side(self.conv1(x), self.conv2))
        out = self.conv5(self._side(out, self.conv4))
        return self.prelu(x + out)


def _lift(in_ch: int, shuffles: int) -> nn.Sequential:
    """Pixel-shuffle ``shuffles`` times (2x each), then convs to ``in_ch // 2`` channels, BatchNorm, ReLU."""
    mid = in_ch // 4
    first_in = in_ch // 4 ** shuffles
    return nn.Sequential(
        *[nn.PixelShuffle(2) for _ in range(shuffles)],
        _conv_prelu(first_in, mid, 5, 2), _conv_prelu(mid, mid), _conv_prelu(mid, mid), _conv_prelu(mid, mid),
        _conv_prelu(mid, in_ch // 2), nn.Conv2d(in_ch // 2, in_ch // 2, 1), nn.BatchNorm2d(in_ch // 2),
        nn.ReLU(inplace=True))


class InitDecoder(nn.Module):
    """At 1/4: refines the flows t->0 and t->1 from warped 1/8 features (lifted to 1/4) and images,
    and starts the feature at t (a mask logit + 128 channels)."""

    def __init__(self, in_ch: int, side: int) -> None:
        super().__init__()
        self.upsample = _lift(in_ch, 1)
        ch = in_ch // 2
        self.convblock = nn.Sequential(
            _conv_prelu(ch * 2 + 16, ch, 1, 0), ResBlock(ch, side), ResBlock(ch, side), ResBlock(ch, side),
            nn.Conv2d(ch, ch + 5, 3, 1, 1))

    def forward(self, lifted0: torch.Tensor, lifted1: torch.Tensor, flow0: torch.Tensor, flow1: torch.Tensor,
                img0: torch.Tensor, img1: torch.Tensor,
                warp: BackWarp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lifted*`` = ``upsample(features)``; ``img*`` in [-1, 1] at 1/4. Returns flow0, flow1, feature."""
        x = torch.cat([warp(lifted0, flow0), warp(lifted1, flow1), flow0, flow1,
                       img0, img1, warp(img0, flow0), warp(img1, flow1)], 1)
        out = self.convblock(x)
        return flow0 + out[:, :2], flow1 + out[:, 2:4], out[:, 4:]


class MultiFlowDecoder(nn.Module):
    """At full (flow-scale) size: three flow pairs, their blend masks and image residuals."""

    def __init__(self, in_ch: int, side: int) -> None:
        super().__init__()
        self.upsample = _lift(in_ch, 2)
        ch = in_ch * 2
        self.convblock = nn.Sequential(
            _conv_prelu(ch + 17, ch), ResBlock(ch, side), ResBlock(ch, side), ResBlock(ch, side),
            nn.Conv2d(ch, 8 * NUM_FLOWS, 3, 1, 1))

    def forward(self, feature: torch.Tensor, lifted0: torch.Tensor, lifted1: torch.Tensor, flow0: torch.Tensor,
                flow1: torch.Tensor, mask: torch.Tensor, img0: torch.Tensor, img1: torch.Tensor,
                warp: BackWarp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs at 1/4 (feature, flows, mask logit), lifted features and images at full size."""
        flow0 = 4.0 * resize(flow0, 4.0)
        flow1 = 4.0 * resize(flow1, 4.0)
        feature = resize(feature, 4.0)
        mask = resize(mask, 4.0)
        x = torch.cat([feature, warp(lifted0, flow0), warp(lifted1, flow1), flow0, flow1, mask,
                       img0, img1, warp(img0, flow0), warp(img1, flow1)], 1)
        n = NUM_FLOWS
        delta_flow0, delta_flow1, delta_mask, img_res = torch.split(self.convblock(x), [2 * n, 2 * n, n, 3 * n], 1)
        mask = torch.sigmoid(delta_mask + mask.repeat(1, n, 1, 1))
        return delta_flow0 + flow0.repeat(1, n, 1, 1), delta_flow1 + flow1.repeat(1, n, 1, 1), mask, img_res


class FlowRefineBlock(nn.Module):
    """AMT's update block: correlation, flows and feature -> feature and flow residuals (optionally at half size)."""

    def __init__(self, cdim: int, scale_factor: float | None, hidden: int = 192, flow_dim: int = 64,
                 corr_dim: int = 256, corr_dim2: int = 192, fc_dim: int = 188, corr_planes: int = 324) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.convc1 = nn.Conv2d(2 * corr_planes, corr_dim, 1)
        self.convc2 = nn.Conv2d(corr_dim, corr_dim2, 3, padding=1)
        self.convf1 = nn.Conv2d(4, flow_dim * 2, 7, padding=3)
        self.convf2 = nn.Conv2d(flow_dim * 2, flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(flow_dim + corr_dim2, fc_dim, 3, padding=1)
        self.gru = nn.Sequential(nn.Conv2d(fc_dim + 4 + cdim, hidden, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, padding=1))
        self.feat_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                       nn.Conv2d(hidden, cdim, 3, padding=1))
        self.flow_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                       nn.Conv2d(hidden, 4, 3, padding=1))
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, net: torch.Tensor, flow: torch.Tensor, corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale_factor is not None:
            net = resize(net, 1 / self.scale_factor)
        cor = self.lrelu(self.convc2(self.lrelu(self.convc1(corr))))
        flo = self.lrelu(self.convf2(self.lrelu(self.convf1(flow))))
        inp = self.lrelu(self.conv(torch.cat([cor, flo], 1)))
        out = self.gru(torch.cat([inp, flow, net], 1))
        delta_net, delta_flow = self.feat_head(out), self.flow_head(out)
        if self.scale_factor is not None:
            delta_net = resize(delta_net, self.scale_factor)
            delta_flow = self.scale_factor * resize(delta_flow, self.scale_factor)
        return delta_net, delta_flow


class MotionField(nn.Module):
    """The implicit motion field: a SIREN MLP (sine activations, w0 = 1) from (pixel latent, t, y, x) to
    normalised flow. Its weights ``params_dict.linear_wb{i}`` are (fan_in + 1, fan_out) with the bias as the last
    row; each layer's weight columns are L2-normalised before use, as the reference's ``normalize_weight``."""

    def __init__(self, latent_dim: int = 2 * LATENT_DIM, coord_dim: int = 3, width: int = MLP_WIDTH,
                 layers: int = MLP_LAYERS, output_dim: int = 2) -> None:
        super().__init__()
        dims = [latent_dim + coord_dim] + [width] * (layers - 1) + [output_dim]
        self.params_dict = nn.ParameterDict({
            f"linear_wb{i}": nn.Parameter(torch.zeros(dims[i] + 1, dims[i + 1])) for i in range(layers)})

    def forward(self, latent: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``latent`` (N,P,C) and ``coords`` (N,P,3) -> (N,P,2) normalised flow."""
        hidden = torch.cat([latent, coords], -1)
        layers = list(self.params_dict.values())
        for i, wb in enumerate(layers):
            weight, bias = F.normalize(wb[:-1], dim=0), wb[-1]
            hidden = torch.matmul(hidden, weight) + bias
            if i < len(layers) - 1:
                hidden = torch.sin(hidden)
        return hidden + MLP_OUTPUT_BIAS


def motion_coords(times: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, height*width, 3) query coordinates (t, y, x): pixel centres mapped to [-1, 1] (the reference's
    ``CoordSampler3D`` with coord_range [-1, 1])."""
    device = times.device

    def axis(n: int) -> torch.Tensor:
        return -1.0 + 2.0 * ((0.5 + torch.arange(n, device=device)) / n)

    ys, xs = axis(height), axis(width)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).view(1, height * width, 2)
    t = times.float().view(-1, 1, 1).expand(-1, height * width, 1)
    return torch.cat([t, grid.expand(times.shape[0], -1, -1)], -1)


@dataclass
class GimmFrame:
    """What GIMM-VFI-R computes from one frame alone, at the flow scale (each tensor has a batch of 1)."""

    image: torch.Tensor  # the frame resized to the flow scale, in [0, 1]
    raft: FrameEncoding
    quarter: torch.Tensor  # projected context features, 128 channels at 1/4
    eighth: torch.Tensor  # projected context features, 256 channels at 1/8
    matching: torch.Tensor  # projected matching features for the bidirectional correlation, 256 at 1/8


@dataclass
class PairMotion:
    """Per-pair results at the flow scale (batch of 1)."""

    flow01: torch.Tensor  # RAFT flow 0 -> 1
    flow10: torch.Tensor  # RAFT flow 1 -> 0
    flow_scale: torch.Tensor  # (1,1,1,1): the largest |flow| of both, the motion field's unit
    latent0: torch.Tensor  # motion latent of the normalised flow 0 -> 1 (16 ch)
    latent1: torch.Tensor  # motion latent of the normalised, negated flow 1 -> 0 (16 ch)
    weight0: torch.Tensor  # splatting weights of frame 0 (1 ch)
    weight1: torch.Tensor
    corr_forward: CorrelationPyramid  # frame 0 pixels against frame 1
    corr_backward: CorrelationPyramid  # frame 1 pixels against frame 0
    init_lifted: tuple[torch.Tensor, torch.Tensor]  # InitDecoder.upsample of both frames' 1/8 features
    final_lifted: tuple[torch.Tensor, torch.Tensor]  # MultiFlowDecoder.upsample of both frames' 1/4 features


class GimmVfiR(nn.Module):
    """GIMM-VFI-R. ``splat_sum(values, flow)`` is the summation forward warp (softmax splatting's core)."""

    def __init__(self, splat_sum: SplatSum) -> None:
        super().__init__()
        self.flow_estimator = RAFT()
        self.amt_last_cproj = nn.Conv2d(128, 256, 1)
        self.amt_second_last_cproj = nn.Conv2d(96, 128, 1)
        self.amt_fproj = nn.Conv2d(256, 256, 1)
        self.amt_init_decoder = InitDecoder(256, 64)
        self.amt_final_decoder = MultiFlowDecoder(128, 64)
        self.amt_update4_low = FlowRefineBlock(128, 2.0)
        self.amt_update4_high = FlowRefineBlock(128, None)
        self.amt_comb_block = nn.Sequential(nn.Conv2d(3 * NUM_FLOWS, 6 * NUM_FLOWS, 7, 1, 3), nn.PReLU(6 * NUM_FLOWS),
                                            nn.Conv2d(6 * NUM_FLOWS, 3, 7, 1, 3))
        # A 3x3 smoothing kernel (learnt) for the local flow variance, and the weights of the two splatting cues.
        self.g_filter = nn.Parameter(torch.zeros(1, 1, 1, 3, 3), requires_grad=False)
        self.alpha_v = nn.Parameter(torch.ones(1))
        self.alpha_fe = nn.Parameter(torch.ones(1))
        self.cnn_encoder = _motion_encoder(2, 32, 3)
        self.res_conv = _motion_encoder(64, 64, 1)
        self.hyponet = MotionField()
        self.splat_sum = splat_sum
        self.warp = BackWarp("border")

    # -- per frame -------------------------------------------------------------------------------

    def encode_frames(self, frames: torch.Tensor, scale: float) -> list[GimmFrame]:
        """(N,3,H,W) BGR frames in [0, 1] -> each one's per-frame work at ``scale`` of its size."""
        image = frames if scale == 1.0 else resize(frames, scale)
        raft, quarter, eighth = self.flow_estimator.encode(255 * image)
        quarter, eighth = self.amt_second_last_cproj(quarter), self.amt_last_cproj(eighth)
        matching = self.amt_fproj(raft.fmap)
        n = frames.shape[0]

        def own(x: torch.Tensor, i: int) -> torch.Tensor:  # a copy, so that one cached frame does not pin the batch
            return x if n == 1 else x[i:i + 1].clone()

        return [GimmFrame(own(image, i), FrameEncoding(own(raft.fmap, i), own(raft.net, i), own(raft.inp, i)),
                          own(quarter, i), own(eighth, i), own(matching, i)) for i in range(n)]

    # -- per pair --------------------------------------------------------------------------------

    def pair_motion(self, frame0: GimmFrame, frame1: GimmFrame, iters: int = RAFT_ITERATIONS) -> PairMotion:
        """RAFT both ways (one batch of two), motion latents, splatting weights, correlation, lifted features."""
        source = FrameEncoding.cat([frame0.raft, frame1.raft])
        target = FrameEncoding.cat([frame1.raft, frame0.raft])
        flow01, flow10 = self.flow_estimator.estimate(source, target, iters).chunk(2)
        flow_scale = torch.maximum(flow01.abs().amax(), flow10.abs().amax()).view(1, 1, 1, 1)
        # A still pair (no motion at all) would divide 0 by 0: any positive unit gives the flow 0 it means.
        unit = flow_scale.clamp_min(torch.finfo(flow_scale.dtype).tiny)
        latents = self.cnn_encoder(torch.cat([(flow01 / unit + 1.0) / 2.0, (-flow10 / unit + 1.0) / 2.0]))
        weight0, weight1 = self._splatting_weights(flow01, flow10)
        volume = all_pairs_correlation(frame0.matching.float(), frame1.matching.float())  # (h*w, 1, h, w), fp32
        h, w = frame0.matching.shape[2:]
        transposed = volume.view(h, w, h, w).permute(2, 3, 0, 1).contiguous().view(h * w, 1, h, w)
        lifted_init = self.amt_init_decoder.upsample(torch.cat([frame0.eighth, frame1.eighth]))
        lifted_final = self.amt_final_decoder.upsample(torch.cat([frame0.quarter, frame1.quarter]))
        return PairMotion(flow01, flow10, unit, latents[:1], latents[1:], weight0, weight1,
                          CorrelationPyramid(volume, 1), CorrelationPyramid(transposed, 1),
                          tuple(lifted_init.chunk(2)), tuple(lifted_final.chunk(2)))

    def _splatting_weights(self, flow01: torch.Tensor, flow10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Higher where a flow is locally smooth (low variance) and consistent with the reverse flow."""
        flows = torch.cat([flow01, flow10])
        padded = F.pad(torch.cat([flows ** 2, flows], 1), (1, 1, 1, 1), mode="reflect").unsqueeze(1)
        mean_of_square, mean = torch.split(F.conv3d(padded, self.g_filter).squeeze(1), 2, dim=1)
        spread = (mean_of_square - mean ** 2).clamp(1e-9, None).sqrt().mean(1, keepdim=True)
        err01 = (-self.warp(flow10, flow01) - flow01).abs().mean(1, keepdim=True)
        err10 = (-self.warp(flow01, flow10) - flow10).abs().mean(1, keepdim=True)
        weight0 = 1 / (1 + err01 * self.alpha_fe) + 1 / (1 + spread[:1] * self.alpha_v)
        weight1 = 1 / (1 + err10 * self.alpha_fe) + 1 / (1 + spread[1:] * self.alpha_v)
        return weight0, weight1

    # -- per time t ------------------------------------------------------------------------------

    def _linear_splat(self, values: torch.Tensor, flow: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Forward warp with weights, normalised by the splatted weight; targets nothing reached stay 0."""
        summed = self.splat_sum(torch.cat([values * weight, weight], 1), flow)
        norm = summed[:, -1:]
        norm = torch.where(norm == 0.0, torch.ones_like(norm), norm)
        return (summed[:, :-1] / norm).to(values.dtype)

    def flow_at(self, pair: PairMotion, t: torch.Tensor, field_size: tuple[int, int]) -> torch.Tensor:
        """The motion field's flow (T,2,h,w) at times ``t`` (T,) at the flow scale; ``field_size`` is where it is
        queried (the reference queries at ``scale`` of the full frame size, normally the flow size itself)."""
        n = t.shape[0]
        tt = t.view(n, 1, 1, 1)
        latent0, latent1 = pair.latent0.expand(n, -1, -1, -1), pair.latent1.expand(n, -1, -1, -1)
        moved0 = self._linear_splat(latent0, pair.flow01 * tt, pair.weight0.expand(n, -1, -1, -1))
        moved1 = self._linear_splat(latent1, pair.flow10 * (1 - tt), pair.weight1.expand(n, -1, -1, -1))
        moved = torch.cat([moved0, moved1], 1)
        latent = moved + self.res_conv(torch.cat([latent0, latent1, moved], 1))
        h, w = field_size
        if latent.shape[2:] != (h, w):
            latent = F.interpolate(latent, size=(h, w), mode="bilinear", align_corners=False)
        latent = latent.permute(0, 2, 3, 1).reshape(n, h * w, -1)
        normalised = self.hyponet(latent, motion_coords(t, h, w).to(latent.dtype))
        normalised = normalised.view(n, h, w, 2).permute(0, 3, 1, 2)
        return (normalised * 2.0 - 1.0) * pair.flow_scale

    def synthesize(self, frame0: GimmFrame, frame1: GimmFrame, pair: PairMotion, flow_t: torch.Tensor,
                   t: torch.Tensor, full0: torch.Tensor, full1: torch.Tensor) -> torch.Tensor:
        """Frames (T,3,H,W) in [0, 1] at times ``t`` (T,) from the motion field's flow ``flow_t`` (T,2,h,w).

        ``full0``/``full1`` are the (1,3,H,W) frames at full size: the flows found at the flow scale are
        resized to them for the final warp and blend."""
        n = t.shape[0]
        tt = t.view(n, 1, 1, 1).to(flow_t.dtype)
        img0, img1 = 2 * frame0.image - 1.0, 2 * frame1.image - 1.0
        quarter0, quarter1 = (resize(x, 0.25).expand(n, -1, -1, -1) for x in (img0, img1))
        img0, img1 = img0.expand(n, -1, -1, -1), img1.expand(n, -1, -1, -1)
        h8, w8 = frame0.matching.shape[2:]
        grid = coords_grid(n, h8, w8, flow_t.device)

        flow_t0 = flow_t * (-tt)
        flow_t1 = flow_t * (1.0 - tt)
        # 1/4: initial flows and feature.
        flowt0, flowt1, feature = self.amt_init_decoder(
            *(x.expand(n, -1, -1, -1) for x in pair.init_lifted), 0.25 * resize(flow_t0, 0.25),
            0.25 * resize(flow_t1, 0.25), quarter0, quarter1, self.warp)
        mask_logit, feature = feature[:, :1], feature[:, 1:]
        # Correlation at 1/8 where the flows, stretched to the whole 0 -> 1 interval, point.
        flow0_8 = 0.5 * resize(flowt0, 0.5)
        flow1_8 = 0.5 * resize(flowt1, 0.5)
        corr = torch.cat([pair.corr_forward.lookup(grid + flow1_8 * (1.0 / (1.0 - tt))),
                          pair.corr_backward.lookup(grid + flow0_8 * (1.0 / tt))], 1).to(feature.dtype)
        delta_feature, delta_flow = self.amt_update4_low(feature, torch.cat([flow0_8, flow1_8], 1), corr)
        delta0, delta1 = torch.chunk(delta_flow, 2, 1)
        flowt0, flowt1, feature = flowt0 + delta0, flowt1 + delta1, feature + delta_feature
        delta_feature, delta_flow = self.amt_update4_high(feature, torch.cat([flowt0, flowt1], 1), resize(corr, 2.0))
        flowt0, flowt1 = flowt0 + delta_flow[:, :2], flowt1 + delta_flow[:, 2:4]
        feature = feature + delta_feature
        # Full (flow-scale) size: three flow pairs, masks and residuals.
        flows0, flows1, mask, residual = self.amt_final_decoder(
            feature, *(x.expand(n, -1, -1, -1) for x in pair.final_lifted), flowt0, flowt1, mask_logit,
            img0, img1, self.warp)
        factor = full0.shape[2] / flows0.shape[2]
        if factor != 1.0:
            flows0, flows1 = factor * resize(flows0, factor), factor * resize(flows1, factor)
            mask, residual = resize(mask, factor), resize(residual, factor)
        return self._combine((2 * full0 - 1.0).expand(n, -1, -1, -1), (2 * full1 - 1.0).expand(n, -1, -1, -1),
                             flows0, flows1, mask, residual).clamp(0, 1)

    def _combine(self, img0: torch.Tensor, img1: torch.Tensor, flows0: torch.Tensor, flows1: torch.Tensor,
                 mask: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Warp both images by each of the three flow pairs, blend by mask plus residual, average the three
        candidates and add the combination block's correction; back from [-1, 1] to [0, 1]."""
        b, _, h, w = flows0.shape
        k = NUM_FLOWS
        img0 = torch.stack([img0] * k, 1).reshape(-1, 3, h, w)
        img1 = torch.stack([img1] * k, 1).reshape(-1, 3, h, w)
        mask = mask.reshape(b * k, 1, h, w)
        warped = (mask * self.warp(img0, flows0.reshape(b * k, 2, h, w))
                  + (1 - mask) * self.warp(img1, flows1.reshape(b * k, 2, h, w))
                  + residual.reshape(b * k, 3, h, w))
        warped = warped.reshape(b, k, 3, h, w)
        out = warped.mean(1) + self.amt_comb_block(warped.view(b, -1, h, w))
        return (out + 1.0) / 2

