"""Synthetic GIMM-VFI-R weights regenerated from the golden state-dict spec, written as a user's two files.

The procedure is the one ``tests/golden/gimm/README.md`` describes (one PCG64 stream per key, seeded by
the key's CRC-32), so the tensors are exactly those the golden outputs were recorded with.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

SPEC = Path(__file__).parent / "golden" / "gimm" / "gimm_state_dict_spec.json"
RAFT_FILE = "raft-things.pth"
GIMM_FILE = "gimmvfi_r_arb_lpips.pt"
RAFT_PREFIX = "flow_estimator."


def load_spec(path: Path = SPEC) -> tuple[float, list[tuple[str, list[int], str]]]:
    """(gain, [(key, shape, dtype name), ...]) in the model's state-dict order."""
    spec = json.loads(path.read_text())
    return float(spec["gain"]), [(k, list(s), d) for k, s, d in spec["tensors"]]


def synthetic_tensor(key: str, shape: list[int], dtype: str, gain: float) -> torch.Tensor:
    """One tensor of the synthetic state dict."""
    if not dtype.startswith("float"):
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    if key.endswith("running_var"):
        return torch.ones(shape)
    if key.endswith("running_mean"):
        return torch.zeros(shape)
    rng = np.random.Generator(np.random.PCG64(zlib.crc32(key.encode())))
    x = rng.standard_normal(shape, dtype=np.float32)
    if len(shape) >= 2:
        x = x * np.float32(gain / math.sqrt(math.prod(shape[1:])))
    elif key.endswith("bias"):
        x = x * np.float32(0.01)
    else:
        x = np.float32(1) + np.float32(0.1) * x
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def synthetic_state_dict(path: Path = SPEC) -> dict[str, torch.Tensor]:
    gain, tensors = load_spec(path)
    return {key: synthetic_tensor(key, shape, dtype, gain) for key, shape, dtype in tensors}


def write_user_files(folder: Path, state: dict[str, torch.Tensor] | None = None,
                     repeat_raft_in_gimm: bool = True) -> dict[str, Path]:
    """Write ``raft-things.pth`` (RAFT part, DataParallel ``module.`` keys) and ``gimmvfi_r_arb_lpips.pt``
    (``{"state_dict": ...}``, with or without the RAFT part) into ``folder``; returns them by role."""
    state = synthetic_state_dict() if state is None else state
    folder.mkdir(parents=True, exist_ok=True)
    raft = {"module." + k.removeprefix(RAFT_PREFIX): v for k, v in state.items() if k.startswith(RAFT_PREFIX)}
    gimm = {k: v for k, v in state.items() if repeat_raft_in_gimm or not k.startswith(RAFT_PREFIX)}
    files = {"raft": folder / RAFT_FILE, "gimm": folder / GIMM_FILE}
    torch.save(raft, files["raft"])
    torch.save({"state_dict": gimm}, files["gimm"])
    return files
