"""Synthetic weights for a model whose real weights the user brings (``gimm``), so the benchmarks run without them.

The tensors follow the procedure of ``tests/golden/gimm/README.md`` (one PCG64 stream per key, seeded by the
key's CRC-32, scaled by the tensor's fan-in) and are written as the user's two files, so the normal loader and
the same network code run on them as on the real weights: speed and memory figures hold, picture quality
does not. A benchmark that falls back to them says so in its output.
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch

from ..core.models.registry import MODELS
from ..weights import WeightsMissingError, WeightStore

GAIN = 0.5  # the golden cases' gain: activations stay in range through the network's depth
RAFT_PREFIX = "flow_estimator."  # the RAFT part of the GIMM state dict, which raft-things.pth holds
SYNTHESIZED = ("gimm",)  # the models this module can write weights for

Layout = list[tuple[str, list[int], str]]  # (key, shape, dtype name) in state-dict order


def synthetic_tensor(key: str, shape: list[int], dtype: str, gain: float = GAIN) -> torch.Tensor:
    """One tensor of the synthetic state dict (running statistics as a fresh BatchNorm's, integers zero)."""
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


def synthetic_state_dict(layout: Layout, gain: float = GAIN) -> dict[str, torch.Tensor]:
    """Every tensor of ``layout``, in its order."""
    return {key: synthetic_tensor(key, shape, dtype, gain) for key, shape, dtype in layout}


def gimm_layout() -> Layout:
    """The keys, shapes and dtypes of this engine's GIMM-VFI-R network (the original's state dict)."""
    from ..core.layers.softsplat import SoftmaxSplatter  # only when gimm weights are written
    from ..core.networks.gimm import GimmVfiR

    net = GimmVfiR(SoftmaxSplatter().splat_sum)
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]


def write_gimm_user_files(folder: Path, state: dict[str, torch.Tensor], repeat_raft_in_gimm: bool = True
                          ) -> dict[str, Path]:
    """Write ``state`` as the user's ``raft-things.pth`` (the RAFT part, DataParallel ``module.`` keys) and
    ``gimmvfi_r_arb_lpips.pt`` (``{"state_dict": ...}``, with or without the RAFT part) into ``folder``;
    returns the paths by role."""
    roles = MODELS.get("gimm").weights.roles
    folder.mkdir(parents=True, exist_ok=True)
    raft = {"module." + k.removeprefix(RAFT_PREFIX): v for k, v in state.items() if k.startswith(RAFT_PREFIX)}
    gimm = {k: v for k, v in state.items() if repeat_raft_in_gimm or not k.startswith(RAFT_PREFIX)}
    files = {role: folder / name for role, name in roles.items()}
    torch.save(raft, files["raft"])
    torch.save({"state_dict": gimm}, files["gimm"])
    return files


class BenchWeights(AbstractContextManager):
    """The weights folder each benchmarked model loads from: the weight store when it has the model's files,
    else (for a model in ``SYNTHESIZED``) a temporary folder of synthetic weights, removed on exit.

    ``log`` gets one line per model that falls back, naming the missing file; ``synthetic`` lists those models.
    """

    def __init__(self, log: Callable[[str], None], store: WeightStore | None = None) -> None:
        self.log = log
        self.store = store or WeightStore()
        self.synthetic: list[str] = []
        self._folder: tempfile.TemporaryDirectory | None = None

    def folder_for(self, model: str) -> Path | None:
        """None when the store serves ``model`` (or it is not one this module synthesizes; its loading then
        fails with the store's error); else the folder with synthetic weights, written on first use."""
        if model not in SYNTHESIZED:
            return None
        try:
            self.store.files_for(model, MODELS.get(model).weights)
            return None
        except WeightsMissingError as missing:
            reason = str(missing).split(";")[0]
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="mpd-bench-weights-")
        folder = Path(self._folder.name)
        if model not in self.synthetic:
            write_gimm_user_files(folder, synthetic_state_dict(gimm_layout()))
            self.synthetic.append(model)
            self.log(f"{model}: {reason}; running on SYNTHETIC weights (same code path and cost as the real "
                     f"ones, meaningless pictures)")
        return folder

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
