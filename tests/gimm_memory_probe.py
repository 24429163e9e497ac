"""Run one gimm pair in this (fresh) process and print its peak memory next to the model's estimate, as JSON.

Usage: ``python gimm_memory_probe.py WEIGHTS_DIR HEIGHT WIDTH TIMES SCALE``. Meant to run with
``MALLOC_MMAP_THRESHOLD_`` set low, so that every large tensor is its own mapping and the resident set
follows what is allocated. The peak is the kernel's high-water mark (VmHWM), reset just before the call
and compared with the resident size at that moment.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch

from multipassdedup.core.models.gimm import GimmInterpolator


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    folder, height, width, times, scale = Path(sys.argv[1]), *map(int, sys.argv[2:5]), float(sys.argv[5])
    torch.set_num_threads(1)  # per-thread scratch memory then does not depend on the machine's core count
    model = GimmInterpolator.from_files({"raft": folder / "raft-things.pth", "gimm": folder / "gimmvfi_r_arb_lpips.pt"},
                                        torch.device("cpu"), torch.float32)
    model.max_batch_pixels = None  # all times in one decoder call, as the estimate assumes
    small = torch.rand(1, 3, 64, 64)
    model.interpolate_tensors(small, small.flip(3), [0.5])  # first-call setup (kernels, thread pools) off the books
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 3, height, width, generator=g), torch.rand(1, 3, height, width, generator=g)
    ts = [0.5] if times == 1 else [0.2 + 0.6 * i / (times - 1) for i in range(times)]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status_bytes("VmRSS")
    model.interpolate_tensors(x, y, ts, scale)
    peak = _status_bytes("VmHWM")
    print(json.dumps({"measured": peak - before, "estimate": model.call_bytes(height, width, scale, times)}))


if __name__ == "__main__":
    main()
