"""The small GMFSS "union" networks: FeatureNet (pyramid features), MetricNet (splatting weights), GridNet fusion.

State-dict compatible with ``feat_union.pkl``, ``metric_union.pkl`` and ``fusionnet_union.pkl``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.warp import BackWarp


def _prelu_conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.PReLU(), nn.Conv2d(cin, cout, 3, stride, 1)]


def _double_conv(cin: int, cout: int, first_stride: int = 1) -> nn.Sequential:
    """PReLU-conv-PReLU-conv; the first conv may stride by 2."""
    return nn.Sequential(*_prelu_conv(cin, cout, first_stride), *_prelu_conv(cout, cout))


def _up_conv(cin: int, cout: int) -> nn.Sequential:
    """PReLU, 2x transposed conv, PReLU, conv."""
    return nn.Sequential(nn.PReLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1), *_prelu_conv(cout, cout))


class FeatureNet(nn.Module):
    """Image -> features of 64, 128 and 192 channels at 1/2, 1/4 and 1/8 of its size."""

    CHANNELS = (64, 128, 192)  # at 1/2, 1/4 and 1/8 of the input size

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3 = self.CHANNELS
        self.block1 = _double_conv(3, c1, 2)
        self.block2 = _double_conv(c1, c2, 2)
        self.block3 = _double_conv(c2, c3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.block1(x)
        x2 = self.block2(x1)
        return x1, x2, self.block3(x2)


def consistency_occlusion(fwd: torch.Tensor, bwd: torch.Tensor, warp: BackWarp,
                          alpha: float = 0.01, beta: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-backward check (UnFlow): 1 where a flow and the other one warped back do not cancel out."""
    magnitude = torch.linalg.vector_norm(fwd, dim=1) + torch.linalg.vector_norm(bwd, dim=1)
    threshold = alpha * magnitude + beta
    fwd_err = torch.linalg.vector_norm(fwd + warp(bwd, fwd), dim=1)
    bwd_err = torch.linalg.vector_norm(bwd + warp(fwd, bwd), dim=1)
    return (fwd_err > threshold).to(fwd.dtype).unsqueeze(1), (bwd_err > threshold).to(bwd.dtype).unsqueeze(1)


class MetricNet(nn.Module):
    """Per-pixel splatting importance for both frames of a pair, in [-10, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.metric_in = nn.Conv2d(14, 64, 3, 1, 1)
        self.metric_net1 = nn.Sequential(*_prelu_conv(64, 64))
        self.metric_net2 = nn.Sequential(*_prelu_conv(64, 64))
        self.metric_net3 = nn.Sequential(*_prelu_conv(64, 64))
        self.metric_out = nn.Sequential(*_prelu_conv(64, 2))
        self._warp = BackWarp("zeros")

    @staticmethod
    def _normalised(flow: torch.Tensor) -> torch.Tensor:
        h, w = flow.shape[2], flow.shape[3]
        return torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, flow01: torch.Tensor,
                flow10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        err0 = (img0 - self._warp(img1, flow01)).abs().mean(1, keepdim=True)
        err1 = (img1 - self._warp(img0, flow10)).abs().mean(1, keepdim=True)
        occ0, occ1 = consistency_occlusion(flow01, flow10, self._warp)
        x = torch.cat([img0, img1, -err0, -err1, self._normalised(flow01), self._normalised(flow10), occ0, occ1], 1)
        feat = self.metric_in(x)
        feat = self.metric_net1(feat) + feat
        feat = self.metric_net2(feat) + feat
        feat = self.metric_net3(feat) + feat
        metric = torch.tanh(self.metric_out(feat)) * 10
        return metric[:, :1], metric[:, 1:2]


class _PixelShuffleTail(nn.Module):
    """64 channels at 1/2 size -> 3 channels at full size."""

    def __init__(self, cin: int, c: int, cout: int) -> None:
        super().__init__()
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(cin, c, 3, 1, 1), nn.PReLU())
        self.upsample = nn.Sequential(nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2))
        self.conv_last = nn.Conv2d(c, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.upsample(self.conv_before_upsample(x)))


class GridNet(nn.Module):
    """Fusion: a 3-row grid (64/128/192 channels at 1/2, 1/4, 1/8) over warped images and warped features.

    Inputs: ``x`` 9 channels at 1/2 size (two splatted images and the IFNet estimate), ``x1``, ``x2``,
    ``x3`` the splatted features of both frames at 1/2, 1/4, 1/8. Output: the frame at full size.
    """

    def __init__(self, in_channels: int = 9, in1: int = 128, in2: int = 256, in3: int = 384,
                 out_channels: int = 3) -> None:
        super().__init__()
        self.residual_model_head0 = _double_conv(in_channels, 64)
        self.residual_model_head1 = _double_conv(in1, 64)
        self.residual_model_head2 = _double_conv(in2, 128)
        self.residual_model_head3 = _double_conv(in3, 192)
        for row, c in ((0, 64), (1, 128), (2, 192)):
            for col in (1, 4, 5):
                setattr(self, f"residual_model_{row}{col}", _double_conv(c, c))
        for name, (cin, cout) in {"10": (64, 128), "20": (128, 192), "11": (64, 128), "21": (128, 192)}.items():
            setattr(self, f"downsample_model_{name}", _double_conv(cin, cout, 2))
        for name, (cin, cout) in {"04": (128, 64), "14": (192, 128), "05": (128, 64), "15": (192, 128)}.items():
            setattr(self, f"upsample_model_{name}", _up_conv(cin, cout))
        self.residual_model_tail = _PixelShuffleTail(64, 64, out_channels)

    def _res(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"residual_model_{name}")(x) + x

    def forward(self, x: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        x00 = self.residual_model_head0(x) + self.residual_model_head1(x1)
        x10 = self.downsample_model_10(x00) + self.residual_model_head2(x2)
        x20 = self.downsample_model_20(x10) + self.residual_model_head3(x3)
        x01 = self._res("01", x00)
        x11 = self._res("11", x10) + self.downsample_model_11(x01)
        x21 = self._res("21", x20) + self.downsample_model_21(x11)
        x24 = self._res("24", x21)
        x25 = self._res("25", x24)
        x14 = self.upsample_model_14(x24) + self._res("14", x11)
        x04 = self.upsample_model_04(x14) + self._res("04", x01)
        x15 = self.upsample_model_15(x25) + self._res("15", x14)
        x05 = self.upsample_model_05(x15) + self._res("05", x04)
        return self.residual_model_tail(x05)

