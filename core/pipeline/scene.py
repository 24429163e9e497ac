"""Scene-cut detection: a 3-D SSIM of two frames shrunk to 32x32, as the reference computed it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_SIZE = 32
WINDOW = 11
SIGMA = 1.5


class SceneDetector:
    """``is_change(x, y)`` is true when the SSIM of the two frames falls below ``threshold``.

    Frames are Nx3xHxW float in [0, 1]. The colour channels are treated as a depth axis, so
    the Gaussian window is 11x11x11 and the replicate padding covers depth too.
    """

    def __init__(self, threshold: float = 0.3) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"scene threshold must be within [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self._windows: dict[tuple, torch.Tensor] = {}

    def _taps(self, device: torch.device) -> list[torch.Tensor]:
        """The normalised 1-D Gaussian as three conv3d kernels, one per axis (depth, height, width): the 3-D
        window is their outer product, so blurring by each in turn is blurring by the window."""
        taps = self._windows.get((device,))
        if taps is None:
            x = torch.arange(WINDOW, dtype=torch.float32) - WINDOW // 2
            g = torch.exp(-(x ** 2) / (2 * SIGMA ** 2))
            g = (g / g.sum()).to(device)
            taps = [g.view(1, 1, WINDOW, 1, 1), g.view(1, 1, 1, WINDOW, 1), g.view(1, 1, 1, 1, WINDOW)]
            self._windows[(device,)] = taps
        return taps

    def _blur(self, v: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        """The 11x11x11 Gaussian blur with replicate padding, as three 1-D passes (1/40 of the work)."""
        p = WINDOW // 2
        v = F.pad(v, (p, p, p, p, p, p), mode="replicate")
        for tap in taps:
            v = F.conv3d(v, tap)
        return v

    @torch.inference_mode()
    def ssim(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Mean SSIM of the two frames at 32x32 (value range 1)."""
        a = F.interpolate(x.float(), (SSIM_SIZE, SSIM_SIZE), mode="bilinear", align_corners=False).unsqueeze(1)
        b = F.interpolate(y.float(), (SSIM_SIZE, SSIM_SIZE), mode="bilinear", align_corners=False).unsqueeze(1)
        n = a.shape[0]
        # The five blurred maps in one batch: means, second moments and the cross moment.
        mu_a, mu_b, aa, bb, ab = self._blur(torch.cat([a, b, a * a, b * b, a * b]), self._taps(a.device)).split(n)
        var_a = aa - mu_a ** 2
        var_b = bb - mu_b ** 2
        cov = ab - mu_a * mu_b
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
        return float(ssim_map.mean())

    def is_change(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        return self.ssim(x, y) < self.threshold
