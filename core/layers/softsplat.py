"""Softmax splatting (Niklaus & Liu 2020): forward-warp by a flow, overlaps resolved by exp(metric) weights.

Every source pixel pushes its value to the four target pixels around ``pixel + flow`` with
bilinear weights; targets outside the frame and non-finite flows are dropped. The soft mode
splats ``value * exp(metric)`` and ``exp(metric)`` and divides the first by the second plus
``NORMALIZE_EPS``. The pure-PyTorch path (scatter-add of rows) runs anywhere; on CUDA a small
cupy kernel with atomic adds is used when cupy imports and passes a self-test.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

NORMALIZE_EPS = 1e-7  # the reference adds this to the splatted weight sum before dividing


def _corner_terms(flow: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Target coordinates ``pixel + flow``: the finite mask and, per corner, (x, y, bilinear weight)."""
    n, _, h, w = flow.shape
    gx = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w) + flow[:, 0]
    gy = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1) + flow[:, 1]
    finite = torch.isfinite(gx) & torch.isfinite(gy)
    x0, y0 = torch.floor(gx), torch.floor(gy)
    x1, y1 = x0 + 1, y0 + 1
    corners = [
        (x0, y0, (x1 - gx) * (y1 - gy)),
        (x1, y0, (gx - x0) * (y1 - gy)),
        (x0, y1, (x1 - gx) * (gy - y0)),
        (x1, y1, (gx - x0) * (gy - y0)),
    ]
    return finite, corners


def splat_sum(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Summation splatting in PyTorch: ``out[p + flow(p)] += values[p]`` with bilinear weights (fp32)."""
    n, c, h, w = values.shape
    values, flow = values.float(), flow.float()
    rows = values.permute(0, 2, 3, 1).reshape(n * h * w, c)  # one row of channels per source pixel
    finite, corners = _corner_terms(flow)
    base = (torch.arange(n, device=flow.device) * (h * w)).view(n, 1, 1)
    sink = n * h * w  # an extra row that swallows dropped contributions
    out = values.new_zeros(n * h * w + 1, c)
    for x, y, weight in corners:
        inside = finite & (x >= 0) & (x < w) & (y >= 0) & (y < h)
        index = torch.where(inside, base + y.clamp(0, h - 1).long() * w + x.clamp(0, w - 1).long(),
                            torch.full_like(base, sink).expand_as(inside))
        out.index_add_(0, index.reshape(-1), rows * weight.reshape(-1, 1))
    return out[:-1].view(n, h, w, c).permute(0, 3, 1, 2)


_CUDA_SOURCE = r"""
extern "C" __global__ void splat_sum(const int n, const int c, const int h, const int w,
                                     const float* __restrict__ values, const float* __restrict__ flow,
                                     float* __restrict__ out) {
    const int total = n * c * h * w;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        const int x = i % w, y = (i / w) % h, ch = (i / (w * h)) % c, b = i / (w * h * c);
        const float fx = (float) x + flow[((b * 2 + 0) * h + y) * w + x];
        const float fy = (float) y + flow[((b * 2 + 1) * h + y) * w + x];
        if (!isfinite(fx) || !isfinite(fy)) { continue; }
        const float v = values[i];
        const int x0 = (int) floorf(fx), y0 = (int) floorf(fy);
        const float wx1 = fx - (float) x0, wx0 = (float) (x0 + 1) - fx;
        const float wy1 = fy - (float) y0, wy0 = (float) (y0 + 1) - fy;
        float* plane = out + (b * c + ch) * h * w;
        if (x0 >= 0 && x0 < w && y0 >= 0 && y0 < h) { atomicAdd(plane + y0 * w + x0, v * wx0 * wy0); }
        if (x0 + 1 >= 0 && x0 + 1 < w && y0 >= 0 && y0 < h) { atomicAdd(plane + y0 * w + x0 + 1, v * wx1 * wy0); }
        if (x0 >= 0 && x0 < w && y0 + 1 >= 0 && y0 + 1 < h) { atomicAdd(plane + (y0 + 1) * w + x0, v * wx0 * wy1); }
        if (x0 + 1 >= 0 && x0 + 1 < w && y0 + 1 >= 0 && y0 + 1 < h) { atomicAdd(plane + (y0 + 1) * w + x0 + 1, v * wx1 * wy1); }
    }
}
"""


class _CupySplatSum:
    """The summation splat as a cupy kernel on the tensors' CUDA device and current stream."""

    def __init__(self) -> None:
        import cupy  # optional dependency, imported only when CUDA is in use

        self._cupy = cupy
        self._kernel = cupy.RawKernel(_CUDA_SOURCE, "splat_sum")

    def __call__(self, values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        cp = self._cupy
        values, flow = values.float().contiguous(), flow.float().contiguous()
        n, c, h, w = values.shape
        out = torch.zeros_like(values)
        total = values.numel()
        with cp.cuda.Device(values.device.index or 0), \
                cp.cuda.ExternalStream(torch.cuda.current_stream(values.device).cuda_stream):
            self._kernel(((total + 511) // 512,), (512,),
                         (cp.int32(n), cp.int32(c), cp.int32(h), cp.int32(w),
                          cp.asarray(values), cp.asarray(flow), cp.asarray(out)))
        return out


class SoftmaxSplatter:
    """``splatter(values, flow, metric)``: softmax splatting of ``values`` (N,C,H,W) by ``flow`` (N,2,H,W).

    ``metric`` is (N,1,H,W); larger values win where several source pixels land on one target.
    The output has the input's dtype; the splatting itself runs in fp32.
    """

    def __init__(self, use_cuda_kernel: bool = True) -> None:
        self._use_cuda_kernel = use_cuda_kernel
        self._cuda: _CupySplatSum | None = None
        self._cuda_checked = False

    def _cuda_splat(self, device: torch.device) -> _CupySplatSum | None:
        """The cupy kernel once it has reproduced the PyTorch path on a tiny case; else None (logged once)."""
        if self._cuda_checked:
            return self._cuda
        self._cuda_checked = True
        try:
            kernel = _CupySplatSum()
            g = torch.Generator().manual_seed(0)
            values = torch.rand(2, 3, 5, 7, generator=g)
            flow = (torch.rand(2, 2, 5, 7, generator=g) - 0.5) * 6
            expected = splat_sum(values, flow)
            got = kernel(values.to(device), flow.to(device)).cpu()
            if not torch.allclose(got, expected, atol=1e-5):
                raise RuntimeError(f"self-test mismatch (max error {(got - expected).abs().max():.3g})")
            self._cuda = kernel
        except Exception as exc:  # noqa: BLE001 - any failure (no cupy, no nvrtc, wrong result) means the PyTorch path
            log.info("softmax splatting uses the PyTorch path on %s (cupy kernel unavailable: %s)", device, exc)
        return self._cuda

    def splat_sum(self, values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Summation splatting on the fastest working path for the tensors' device."""
        if values.is_cuda and self._use_cuda_kernel:
            kernel = self._cuda_splat(values.device)
            if kernel is not None:
                return kernel(values, flow)
        return splat_sum(values, flow)

    def __call__(self, values: torch.Tensor, flow: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
        weight = metric.float().exp()
        summed = self.splat_sum(torch.cat([values.float() * weight, weight], 1), flow)
        return (summed[:, :-1] / (summed[:, -1:] + NORMALIZE_EPS)).to(values.dtype)
