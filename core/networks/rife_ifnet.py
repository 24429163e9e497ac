"""RIFE 4.6 IFNet: four coarse-to-fine blocks (192/128/96/64 channels) estimating bidirectional flow and a blend mask.

State-dict compatible with ``rife.pkl`` (keys ``block{0..3}.conv0 / convblock / lastconv``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.warp import BackWarp


def _conv_lrelu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.LeakyReLU(0.2, True))


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor`` as the reference does, but a factor of 1, the identity, without a copy."""
    if factor == 1.0:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class ResConv(nn.Module):
    """3x3 conv with a learnt per-channel gain and a residual connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One level: works at 1/scale of the frame and returns a flow residual (4 ch) and a mask residual."""

    def __init__(self, in_planes: int, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_lrelu(in_planes, c // 2, 2), _conv_lrelu(c // 2, c, 2))
        self.convblock = nn.Sequential(*[ResConv(c) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 6, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Sequence[torch.Tensor], flow: torch.Tensor | None,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: the input's channel groups at full size. In fp32 (the exact mode) the reference's ops in its
        order; under autocast the same values with less memory traffic (see ``_fast_io``)."""
        if torch.is_autocast_enabled(x[0].device.type):
            return self._fast_io(x, flow, scale)
        x = F.interpolate(torch.cat(list(x), 1), scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        tmp = self.lastconv(self.convblock(self.conv0(x)))
        tmp = F.interpolate(tmp, scale_factor=scale, mode="bilinear", align_corners=False)
        return tmp[:, :4] * scale, tmp[:, 4:5]

    def _fast_io(self, x: Sequence[torch.Tensor], flow: torch.Tensor | None,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with its full-size work cut down: the input groups are resized before they are concatenated
        (resizing is per channel), a resize by 1 is skipped (it is the identity), and the output is upsampled
        in fp32 (CPU bf16 bilinear is several times slower, and the flow accumulates in fp32 anyway), without
        its unused sixth channel, after the flow is scaled (by a power of two: exact) at the block's size."""
        x = torch.cat([_resize(part, 1.0 / scale) for part in x], 1)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) / scale), 1)
        tmp = self.lastconv(self.convblock(self.conv0(x)))[:, :5].float()
        tmp = torch.cat((tmp[:, :4] * scale, tmp[:, 4:5]), 1) if scale != 1 else tmp
        tmp = _resize(tmp, scale)
        return tmp[:, :4], tmp[:, 4:5]


class IFNet(nn.Module):
    """Frame at time t between img0 and img1 (BGR, [0,1], sizes a multiple of 32 x max(scale_list)).

    Under autocast (bf16/fp16), the first ``fp32_blocks`` blocks run in fp32 (an fp32 island), and the flow
    and mask accumulation between blocks, the warps and the final blend always do.
    """

    def __init__(self, fp32_blocks: int = 0) -> None:
        super().__init__()
        self.fp32_blocks = fp32_blocks
        self.block0 = IFBlock(7, c=192)
        self.block1 = IFBlock(8 + 4, c=128)
        self.block2 = IFBlock(8 + 4, c=96)
        self.block3 = IFBlock(8 + 4, c=64)
        self.warp = BackWarp("border")

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor,
                scale_list: Sequence[float] = (8, 4, 2, 1)) -> torch.Tensor:
        """``timestep`` is (N,1,1,1); the batch may mix pairs and times."""
        t = timestep.to(img0.dtype).expand(img0.shape[0], 1, img0.shape[2], img0.shape[3])
        flow, mask = self._block(0, (img0, img1, t), None, scale_list[0])
        w0, w1 = self.warp(img0, flow[:, :2]), self.warp(img1, flow[:, 2:4])
        for i, scale in enumerate(scale_list[1:], 1):
            df, dm = self._block(i, (w0, w1, t, mask), flow, scale)
            flow, mask = flow + df, mask + dm
            w0, w1 = self.warp(img0, flow[:, :2]), self.warp(img1, flow[:, 2:4])
        mask = torch.sigmoid(mask)
        return w0 * mask + w1 * (1 - mask)

    def _block(self, i: int, x: Sequence[torch.Tensor], flow: torch.Tensor | None,
               scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``i``'s flow and mask (residuals), as fp32 whatever it computed in."""
        block = (self.block0, self.block1, self.block2, self.block3)[i]
        if i < self.fp32_blocks and torch.is_autocast_enabled(x[0].device.type):
            with torch.autocast(x[0].device.type, enabled=False):
                df, dm = block([part.float() for part in x], None if flow is None else flow.float(), scale)
        else:
            df, dm = block(x, flow, scale)
        return df.float(), dm.float()
