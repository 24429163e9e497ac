"""The ``rife`` interpolator: RIFE 4.6 IFNet at full resolution, all times of a pair in one batch."""

from __future__ import annotations

from pathlib import Path

import torch

from .interpolator import Interpolator
from .rife import IFNet


class RifeInterpolator(Interpolator):
    name = "rife"
    base_alignment = 64

    def __init__(self, net: IFNet, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(device, dtype)
        self.net = net.to(device=device, dtype=dtype).eval()

    @classmethod
    def from_files(cls, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> "RifeInterpolator":
        from .models import load_state_dict

        net = IFNet()
        net.load_state_dict(load_state_dict(files["ifnet"]))
        return cls(net, device, dtype)

    def _infer(self, x: torch.Tensor, y: torch.Tensor, ts: list[float], scale: float) -> list[torch.Tensor]:
        n = len(ts)
        t = torch.tensor(ts, dtype=x.dtype, device=x.device).view(n, 1, 1, 1)
        scales = [8 / scale, 4 / scale, 2 / scale, 1 / scale]
        out = self.net(x.expand(n, -1, -1, -1), y.expand(n, -1, -1, -1), t, scales)
        return list(out.split(1, 0))
