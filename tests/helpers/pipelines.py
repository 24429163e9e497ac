"""The engine as the golden cases run it, and the memory its frames hold while it runs."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterable, Iterator
from fractions import Fraction

import torch

from multipassdedup.core import MultiPassDedup
from multipassdedup.core.models.base import ModelFrame

MIN_PSNR = 45.0  # dB: every frame of a golden case, against the reference program's


def run_pipeline(model, frames, params: dict, **kw) -> tuple[list, MultiPassDedup]:
    """The output of ``MultiPassDedup`` set up by a golden case's ``params`` (plus ``kw``), and the pipeline."""
    pipe = MultiPassDedup(model, n_pass=params["n_pass"], src_fps=Fraction(params["src_fps"]),
                          dst_fps=params["dst_fps"], times=params["times"] if params["times"] > 0 else None,
                          scdet=bool(params["scdet"]), scdet_threshold=params["scdet_threshold"],
                          scale=params["scale"], **kw)
    out = []
    for f in frames:
        out += pipe.push(f)
    return out + pipe.flush(), pipe


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name))


def storage_bytes(*objs) -> int:
    """Bytes of the distinct tensor storages reachable from ``objs`` (frames, caches, lists of tensors)."""
    storages = {}
    for t in _tensors(list(objs)):
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
    return sum(storages.values())


class PeakHeld:
    """Wraps a model; around every call, measures the bytes held by live frames plus the call's outputs."""

    def __init__(self, model) -> None:
        self.model = model
        self.peak = 0

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def sample(self, outputs: Iterable = ()) -> None:
        """Raise ``peak`` to what the live ``ModelFrame``s and ``outputs`` hold now, if that is more."""
        frames = [o for o in gc.get_objects() if type(o) is ModelFrame]
        self.peak = max(self.peak, storage_bytes([(f.tensor, f.cache) for f in frames], outputs))

    def interpolate_batch(self, requests, scale: float = 1.0):
        self.sample()
        outputs = self.model.interpolate_batch(requests, scale)
        self.sample(outputs)
        return outputs


def stream(pipe: MultiPassDedup, frames: Iterable) -> list:
    """Every output frame of ``pipe`` for ``frames``: each pushed in turn, then the flush."""
    out = []
    for f in frames:
        out += pipe.push(f)
    return out + pipe.flush()
