"""The optimisations do less work for the same output: call counts on a clip drawn on twos."""

from __future__ import annotations

import numpy as np

from helpers.frames import psnr
from multipassdedup.core import MultiPassDedup


def on_twos(n: int, height: int = 64, width: int = 128) -> list[np.ndarray]:
    """A still background with a character redrawn every second frame: pairs 0-1, 2-3, ... are identical."""
    rng = np.random.default_rng(2)
    bg = (rng.random((height // 4, width // 4, 3)) * 50 + 100).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    frames = []
    for i in range(n):
        f = bg.copy()
        x = 8 + 10 * (i // 2)
        f[16:40, x:x + 20] = (230, 200, 40)
        f[16:18, x:x + 20] = 10
        frames.append(f)
    return frames


def run(model, frames, **kw):
    pipe = MultiPassDedup(model, n_pass=3, src_fps=24, dst_fps=60, scdet=True, **kw)
    out = []
    for f in frames:
        out += pipe.push(f)
    return out + pipe.flush(), pipe.stats


def test_duplicate_pairs_are_skipped_and_counted(rife) -> None:
    frames = on_twos(8)
    identical_input_pairs = sum(np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    before = rife.stats.model_calls
    fast, s_fast = run(rife, frames)
    between = rife.stats.model_calls
    slow, s_slow = run(rife, frames, wavefront=False, skip_duplicates=False)
    assert s_slow.duplicate_skips == 0
    assert s_fast.duplicate_skips >= identical_input_pairs == 4
    assert s_fast.model_calls + s_fast.duplicate_skips == s_slow.model_calls
    # The model saw exactly the calls the pipeline counted.
    assert between - before == s_fast.model_calls and rife.stats.model_calls - between == s_slow.model_calls
    assert len(fast) == len(slow)
    assert min(psnr(a, b) for a, b in zip(fast, slow)) >= 45


def test_wavefront_batches_each_step(rife) -> None:
    frames = on_twos(8)
    _, wave = run(rife, frames, skip_duplicates=False)
    _, ref = run(rife, frames, wavefront=False, skip_duplicates=False)
    assert wave.model_calls == ref.model_calls
    # Reference order: one batch per pair with model work; wavefront: at most one per step
    # (8 input frames -> 7 steps while streaming, then a drain of n_pass steps).
    assert wave.batches <= 7 + 3 < ref.batches


def test_cpu_batches_are_capped_by_pixels_and_keep_the_output(rife) -> None:
    """On the CPU a large batch is split into whole pairs within ``max_batch_pixels``; the frames are the same."""
    import torch

    from multipassdedup.core import ModelFrame, PairRequest

    assert rife.device.type == "cpu" and rife.max_batch_pixels == rife.cpu_batch_pixels
    g = torch.Generator().manual_seed(0)
    frames = [ModelFrame(torch.rand(1, 3, 64, 128, generator=g)) for _ in range(4)]
    requests = [PairRequest(frames[i], frames[i + 1], [0.25, 0.5, 0.75]) for i in range(3)]
    saved = rife.max_batch_pixels
    try:
        rife.max_batch_pixels = None
        before = rife.stats.batches
        whole = rife.interpolate_batch(requests)
        assert rife.stats.batches - before == 1
        rife.max_batch_pixels = 2 * 3 * 64 * 128  # two pairs of three evaluations fit, the third goes alone
        before = rife.stats.batches
        split = rife.interpolate_batch(requests)
        assert rife.stats.batches - before == 2
    finally:
        rife.max_batch_pixels = saved
    assert [len(r) for r in split] == [3, 3, 3]
    for a, b in zip((f for r in whole for f in r), (f for r in split for f in r)):
        assert torch.allclose(a, b, atol=1e-5)
