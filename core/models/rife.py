"""The ``rife`` interpolator: RIFE 4.6 IFNet at full resolution, all times of a pair in one batch."""

from __future__ import annotations

from pathlib import Path

import torch

from ...weights import ORIGINAL_LAYOUT_DIR, WeightFiles, load_state_dict
from ..networks.rife_ifnet import IFNet
from .base import Interpolator, PairRequest, split_per_pair
from .registry import register_model

# In the original layout RIFE's file may carry its version in its name: the first rife*.pkl is taken.
WEIGHTS = WeightFiles(roles={"ifnet": "rife.pkl"}, original_dir=ORIGINAL_LAYOUT_DIR,
                      original_names={"ifnet": "rife*.pkl"})


@register_model(WEIGHTS)
class RifeInterpolator(Interpolator):
    name = "rife"
    base_alignment = 64
    cpu_batch_pixels = 2 ** 18  # 8 evaluations at 256x128 per invocation, one at 640x360
    precisions = ("fp32", "bf16", "fp16")
    auto_cpu_bf16 = (True, "RIFE's bf16 picture is within 0.1 dB of fp32 against ground truth, golden pairs >= 40 dB")
    FP32_BLOCKS = 0  # IFNet blocks kept fp32 in bf16/fp16: none (the golden pairs stay above 50 dB in bf16)
    channels_last_in = {"cpu": ("bf16",)}

    def __init__(self, net: IFNet, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(device, dtype)
        self.net = net.to(device=device, dtype=dtype).eval()
        self.use_channels_last()

    @classmethod
    def from_files(cls, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> RifeInterpolator:
        net = IFNet(fp32_blocks=cls.FP32_BLOCKS)
        net.load_state_dict(load_state_dict(files["ifnet"]))
        return cls(net, device, dtype)

    def fp32_modules(self, precision: str) -> list[torch.nn.Module]:
        """IFNet's first ``fp32_blocks`` blocks (fp32 islands in every precision)."""
        return [getattr(self.net, f"block{i}") for i in range(self.net.fp32_blocks)]

    def _infer_batch(self, requests: list[PairRequest], scale: float) -> list[list[torch.Tensor]]:
        # One IFNet call for every (pair, t): the network takes a per-sample timestep.
        xs = torch.cat([r.x.tensor.expand(len(r.ts), -1, -1, -1) for r in requests])
        ys = torch.cat([r.y.tensor.expand(len(r.ts), -1, -1, -1) for r in requests])
        ts = [t for r in requests for t in r.ts]
        t = torch.tensor(ts, dtype=xs.dtype, device=xs.device).view(len(ts), 1, 1, 1)
        out = self.net(xs, ys, t, [8 / scale, 4 / scale, 2 / scale, 1 / scale])
        return split_per_pair(out.split(1, 0), requests)
