"""RAFT (Teed & Deng 2020), the large model, as GIMM-VFI-R runs it: optical flow in 1/8-resolution iterations.

State-dict compatible with ``raft-things.pth`` once DataParallel's ``module.`` prefix is removed
(keys ``fnet.*``, ``cnet.*``, ``update_block.*``).

The work is split by what it depends on, so a caller can share it:

- ``encode`` (per frame): the feature encoder (matching features, 256 channels at 1/8) and the
  context encoder (GRU state and input at 1/8, plus its 1/4 and 1/8 intermediate features, which
  GIMM-VFI reuses as image features);
- ``estimate`` (per ordered pair): the all-pairs correlation pyramid and the recurrent updates.

Numerics follow the reference: inputs are mapped ``x * 255 -> 2 * (x / 255) - 1``, correlation
lookups use ``grid_sample(align_corners=True)`` on pixel coordinates, with the reference's window
layout (the first window axis moves x, the second y), and the final flow is upsampled by the
learnt convex combination.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CORR_LEVELS = 4
CORR_RADIUS = 4
CORR_CHANNELS = CORR_LEVELS * (2 * CORR_RADIUS + 1) ** 2  # 324 correlation values per pixel
HIDDEN_DIM = 128  # GRU state channels
CONTEXT_DIM = 128  # GRU input channels from the context encoder
FEATURE_DIM = 256  # matching features
STRIDE = 8  # flow is estimated at 1/8 of the input


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with normalisation and a (possibly strided, projected) shortcut."""

    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1, self.norm2 = _norm(norm, planes), _norm(norm, planes)
        self.downsample: nn.Module | None = None
        if stride != 1:
            # The reference registers the shortcut's norm twice (``norm3`` and ``downsample.1``): checkpoints
            # hold both keys, and ``downsample.1``, loaded later, is the one that takes effect.
            self.norm3 = _norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # no affine parameters, no running statistics
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown normalisation {kind!r}")


class Encoder(nn.Module):
    """RAFT's BasicEncoder: 7x7 stride-2 stem, three residual stages (64, 96, 128 channels at 1/2, 1/4, 1/8)
    and a 1x1 output projection. Returns the projection and the 1/4 and 1/8 stage outputs."""

    def __init__(self, output_dim: int, norm: str) -> None:
        super().__init__()
        self.norm1 = _norm(norm, 64)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(ResidualBlock(64, 64, norm), ResidualBlock(64, 64, norm))
        self.layer2 = nn.Sequential(ResidualBlock(64, 96, norm, 2), ResidualBlock(96, 96, norm))
        self.layer3 = nn.Sequential(ResidualBlock(96, 128, norm, 2), ResidualBlock(128, 128, norm))
        self.conv2 = nn.Conv2d(128, output_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.relu1(self.norm1(self.conv1(x))))
        quarter = self.layer2(x)
        eighth = self.layer3(quarter)
        return self.conv2(eighth), quarter, eighth


class MotionEncoder(nn.Module):
    """Correlation and current flow -> 126 motion channels, with the flow appended (128)."""

    def __init__(self) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(CORR_CHANNELS, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], 1)))
        return torch.cat([out, flow], 1)


class SepConvGRU(nn.Module):
    """A convolutional GRU run twice: with 1x5 kernels (horizontal), then with 5x1 kernels (vertical)."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        cin = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(cin, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(cin, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(cin, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(cin, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(cin, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(cin, hidden_dim, (5, 1), padding=(2, 0))

    @staticmethod
    def _step(h: torch.Tensor, x: torch.Tensor, convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d) -> torch.Tensor:
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(convz(hx))
        r = torch.sigmoid(convr(hx))
        q = torch.tanh(convq(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self._step(h, x, self.convz1, self.convr1, self.convq1)
        return self._step(h, x, self.convz2, self.convr2, self.convq2)


class FlowHead(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """One recurrent refinement: new GRU state, a flow residual and the convex-upsampling mask logits."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = MotionEncoder()
        self.gru = SepConvGRU(HIDDEN_DIM, 128 + CONTEXT_DIM)
        self.flow_head = FlowHead(HIDDEN_DIM, 256)
        self.mask = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(256, STRIDE * STRIDE * 9, 1))

    def forward(self, net: torch.Tensor, inp: torch.Tensor, corr: torch.Tensor,
                flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(new GRU state, flow residual); ``upsample_mask`` gives the mask for the final state."""
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], 1))
        return net, self.flow_head(net)

    def upsample_mask(self, net: torch.Tensor) -> torch.Tensor:
        return 0.25 * self.mask(net)  # the reference scales the logits (to balance gradients in training)


def coords_grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(batch, 2, height, width) float pixel coordinates, channel 0 = x, channel 1 = y."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(batch, 1, 1, 1)


def _window(radius: int, device: torch.device) -> torch.Tensor:
    """The (2r+1, 2r+1, 2) lookup offsets in the reference's layout: offset[i, j] = (d_i, d_j) as (x, y)."""
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device)
    a, b = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([a, b], -1)


def sample_pixels(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` of ``volume`` (N,C,H,W) at pixel coordinates ``coords`` (N,h,w,2 as x, y), zeros outside.

    The reference's ``align_corners=True`` normalisation divides by ``size - 1``; a 1-pixel level (the
    coarsest one of a 64-pixel input) would make it NaN, so such a level uses the ``align_corners=False``
    normalisation, which addresses the same pixel coordinates."""
    h, w = volume.shape[-2:]
    x, y = coords.split(1, -1)
    if h > 1 and w > 1:
        grid = torch.cat([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], -1)
        return F.grid_sample(volume, grid, align_corners=True)
    grid = torch.cat([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], -1)
    return F.grid_sample(volume, grid, align_corners=False)


def all_pairs_correlation(fmap1: torch.Tensor, fmap2: torch.Tensor) -> torch.Tensor:
    """(B*H*W, 1, H, W): the dot product of every pixel of ``fmap1`` with every pixel of ``fmap2``, / sqrt(C)."""
    b, c, h, w = fmap1.shape
    corr = torch.matmul(fmap1.view(b, c, h * w).transpose(1, 2), fmap2.view(b, c, h * w))
    corr.div_(torch.sqrt(torch.tensor(c).float()))  # in place: the volume is the largest tensor RAFT makes
    return corr.view(b * h * w, 1, h, w)


class CorrelationPyramid:
    """The all-pairs correlation volume of one pair and its 2x2-average-pooled levels, looked up in windows.

    ``lookup(coords)`` samples, for each pixel of the first map, a (2r+1)^2 window around ``coords``
    (the pixel's position in the second map) at every level: ``levels * (2r+1)^2`` channels.
    """

    def __init__(self, volume: torch.Tensor, batch: int, levels: int = CORR_LEVELS, radius: int = CORR_RADIUS) -> None:
        self.batch = batch
        self.radius = radius
        self.levels = [volume]
        for _ in range(levels - 1):
            self.levels.append(F.avg_pool2d(self.levels[-1], 2, stride=2))

    @classmethod
    def between(cls, fmap1: torch.Tensor, fmap2: torch.Tensor) -> CorrelationPyramid:
        return cls(all_pairs_correlation(fmap1, fmap2), fmap1.shape[0])

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """(B,2,h,w) coordinates -> (B, levels*(2r+1)^2, h, w); also takes (B*K,2,h,w) for K lookups per pixel row
        of a batch-B pyramid (K windows per source pixel, e.g. several times ``t``), returning (B*K, ..., h, w)."""
        n, _, h, w = coords.shape
        k = n // self.batch
        size = 2 * self.radius + 1
        # (B, K, h, w, 2) -> (B*h*w, K*size, size, 2): each source pixel's K windows stacked along grid rows.
        centres = coords.view(self.batch, k, 2, h, w).permute(0, 3, 4, 1, 2).reshape(self.batch * h * w, k, 1, 1, 2)
        window = _window(self.radius, coords.device).view(1, 1, size, size, 2)
        out = []
        for level, volume in enumerate(self.levels):
            grid = (centres / 2 ** level + window).reshape(self.batch * h * w, k * size, size, 2)
            sampled = sample_pixels(volume, grid)  # (B*h*w, 1, K*size, size)
            out.append(sampled.view(self.batch, h, w, k, size * size))
        corr = torch.cat(out, -1)  # (B, h, w, K, levels*size^2)
        return corr.permute(0, 3, 4, 1, 2).reshape(n, -1, h, w).contiguous()


@dataclass
class FrameEncoding:
    """What RAFT's flow estimation needs from one frame alone (batch of N frames)."""

    fmap: torch.Tensor  # matching features, 256 channels at 1/8
    net: torch.Tensor  # initial GRU state (tanh of the context), 128 channels at 1/8
    inp: torch.Tensor  # GRU input (relu of the context), 128 channels at 1/8

    @staticmethod
    def cat(items: list[FrameEncoding]) -> FrameEncoding:
        """One batch of several encodings."""
        return FrameEncoding(*(torch.cat([getattr(e, name) for e in items]) for name in ("fmap", "net", "inp")))


class RAFT(nn.Module):
    """RAFT-large with the feature encoder (instance norm), context encoder (batch norm) and update block."""

    def __init__(self) -> None:
        super().__init__()
        self.fnet = Encoder(FEATURE_DIM, "instance")
        self.cnet = Encoder(HIDDEN_DIM + CONTEXT_DIM, "batch")
        self.update_block = UpdateBlock()

    def encode(self, frames: torch.Tensor) -> tuple[FrameEncoding, torch.Tensor, torch.Tensor]:
        """Per-frame work for (N,3,H,W) frames holding values in [0, 255]; H and W multiples of 8.

        Returns the encoding and the context encoder's 1/4 (96 ch) and 1/8 (128 ch) stage outputs."""
        x = 2 * (frames / 255.0) - 1.0
        fmap = self.fnet(x)[0]
        context, quarter, eighth = self.cnet(x)
        net, inp = torch.split(context, [HIDDEN_DIM, CONTEXT_DIM], 1)
        return FrameEncoding(fmap, torch.tanh(net), torch.relu(inp)), quarter, eighth

    def estimate(self, source: FrameEncoding, target: FrameEncoding, iters: int = 20) -> torch.Tensor:
        """Flow (N,2,H,W) in pixels from each ``source`` frame to its ``target`` frame, at full input size.

        The correlation volume, the coordinates and the flow's accumulation are float32 whatever the
        network's dtype (as the reference keeps them): half precision would misplace lookups in large frames."""
        dtype = source.net.dtype
        corr = CorrelationPyramid.between(source.fmap.float(), target.fmap.float())
        n, _, h, w = source.fmap.shape
        coords0 = coords_grid(n, h, w, source.fmap.device)
        coords1 = coords0.clone()
        net = source.net
        for _ in range(iters):
            flow = (coords1 - coords0).to(dtype)
            net, delta = self.update_block(net, source.inp, corr.lookup(coords1).to(dtype), flow)
            coords1 = coords1 + delta.float()
        del corr
        return convex_upsample(coords1 - coords0, self.update_block.upsample_mask(net).float()).to(dtype)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,2,H,W) flow at 1/8 -> (N,2,8H,8W): each fine pixel a softmax-weighted mix of the 3x3 coarse neighbours."""
    n, _, h, w = flow.shape
    weights = torch.softmax(mask.view(n, 1, 9, STRIDE, STRIDE, h, w), dim=2)
    neighbours = F.unfold(STRIDE * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
    up = torch.sum(weights * neighbours, dim=2)  # (N, 2, 8, 8, H, W)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, 2, STRIDE * h, STRIDE * w)
