"""Backward warping by an optical flow (bilinear sampling), with a per-shape base grid cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BackWarp:
    """``warp(img, flow)`` samples ``img`` at ``pixel + flow``; flow is in pixels, channels (dx, dy)."""

    def __init__(self, padding_mode: str = "border") -> None:
        self.padding_mode = padding_mode
        self._grids: dict[tuple, torch.Tensor] = {}

    def _grid(self, flow: torch.Tensor) -> torch.Tensor:
        n, _, h, w = flow.shape
        key = (flow.device, flow.dtype, n, h, w)
        grid = self._grids.get(key)
        if grid is None:
            xs = torch.linspace(-1.0, 1.0, w, dtype=flow.dtype, device=flow.device).view(1, 1, 1, w).expand(n, 1, h, w)
            ys = torch.linspace(-1.0, 1.0, h, dtype=flow.dtype, device=flow.device).view(1, 1, h, 1).expand(n, 1, h, w)
            grid = torch.cat([xs, ys], 1)
            if len(self._grids) > 16:
                self._grids.clear()
            self._grids[key] = grid
        return grid

    def __call__(self, img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        dtype = img.dtype
        img, flow = img.float(), flow.float()
        h, w = img.shape[2], img.shape[3]
        norm = torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
        g = (self._grid(flow) + norm).permute(0, 2, 3, 1)
        out = F.grid_sample(img, g, mode="bilinear", padding_mode=self.padding_mode, align_corners=True)
        return out.to(dtype)
