"""Backward warping by an optical flow (bilinear sampling), with a per-shape base grid cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BackWarp:
    """``warp(img, flow)`` samples ``img`` at ``pixel + flow``; flow is in pixels, channels (dx, dy).

    The sampling grid is built in one pass straight into the (N, H, W, 2) layout ``grid_sample`` takes:
    ``flow / ((size - 1) / 2) + base`` per axis, the reference's arithmetic without its concatenation.
    """

    def __init__(self, padding_mode: str = "border") -> None:
        self.padding_mode = padding_mode
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _grid(self, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The base grid (1, H, W, 2) in [-1, 1] and the half sizes (W-1)/2, (H-1)/2 that normalise a flow."""
        _, _, h, w = flow.shape
        key = (flow.device, flow.dtype, h, w)
        cached = self._grids.get(key)
        if cached is None:
            xs = torch.linspace(-1.0, 1.0, w, dtype=flow.dtype, device=flow.device).view(1, 1, w, 1).expand(1, h, w, 1)
            ys = torch.linspace(-1.0, 1.0, h, dtype=flow.dtype, device=flow.device).view(1, h, 1, 1).expand(1, h, w, 1)
            half = torch.tensor([(w - 1.0) / 2.0, (h - 1.0) / 2.0], dtype=flow.dtype, device=flow.device)
            cached = (torch.cat([xs, ys], 3), half)
            if len(self._grids) > 16:
                self._grids.clear()
            self._grids[key] = cached
        return cached

    def __call__(self, img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        dtype = img.dtype
        img, flow = img.float(), flow.float()
        base, half = self._grid(flow)
        g = torch.add(flow.permute(0, 2, 3, 1) / half, base)
        out = F.grid_sample(img, g, mode="bilinear", padding_mode=self.padding_mode, align_corners=True)
        return out.to(dtype)
