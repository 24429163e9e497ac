"""Synthetic GIMM-VFI-R weights regenerated from the golden state-dict spec, written as a user's two files.

The procedure is the one ``tests/golden/gimm/README.md`` describes (one PCG64 stream per key, seeded by
the key's CRC-32), so the tensors are exactly those the golden outputs were recorded with. The generator
and the writer are the benchmarks' (``bench/synthetic_weights.py``); here the layout comes from the spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.frames import GOLDEN
from multipassdedup.bench.synthetic_weights import synthetic_state_dict as from_layout
from multipassdedup.bench.synthetic_weights import write_gimm_user_files

SPEC = GOLDEN / "gimm" / "gimm_state_dict_spec.json"
RAFT_FILE = "raft-things.pth"
GIMM_FILE = "gimmvfi_r_arb_lpips.pt"


def load_spec(path: Path = SPEC) -> tuple[float, list[tuple[str, list[int], str]]]:
    """(gain, [(key, shape, dtype name), ...]) in the model's state-dict order."""
    spec = json.loads(path.read_text())
    return float(spec["gain"]), [(k, list(s), d) for k, s, d in spec["tensors"]]


def synthetic_state_dict(path: Path = SPEC) -> dict[str, torch.Tensor]:
    """The golden state dict: every tensor of the spec at ``path``, regenerated."""
    gain, layout = load_spec(path)
    return from_layout(layout, gain)


def write_user_files(folder: Path, state: dict[str, torch.Tensor] | None = None,
                     repeat_raft_in_gimm: bool = True) -> dict[str, Path]:
    """Write ``raft-things.pth`` (RAFT part, DataParallel ``module.`` keys) and ``gimmvfi_r_arb_lpips.pt``
    (``{"state_dict": ...}``, with or without the RAFT part) into ``folder``; returns them by role."""
    return write_gimm_user_files(folder, synthetic_state_dict() if state is None else state, repeat_raft_in_gimm)
