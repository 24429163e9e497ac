"""Runs inside ``.venv-vs`` (VapourSynth, the base install, no torch) for tests/test_vapoursynth.py.

``python vs_run.py JOB.json``: builds the source clip the job names (a YUV4MPEG2 file read into a clip, raw RGB24
frames, or a file through BestSource), runs ``multipassdedup.vapoursynth.interpolate`` on it once per run of the
job, asks for the output frames in the run's order (forward through VapourSynth's own parallel requests, reverse,
shuffled, or from two threads at once; a run may ``reuse`` the clip of the run before, and a run ``kill`` kills
the daemon whose pid the job gives), and writes every frame's samples (the planes one after the other, as
YUV4MPEG2 frames hold them) and properties to the job's ``out`` (.npz), with a JSON summary on stdout: the clip's
length, rate and format, and the error of a run that failed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import vapoursynth as vs

from multipassdedup.client.pipe.y4m import Y4mReader, plane_layout
from multipassdedup.vapoursynth import interpolate

core = vs.core
FORMATS = {"yuv420p": vs.YUV420P8, "yuv420p10le": vs.YUV420P10, "yuv422p10le": vs.YUV422P10,
           "yuv444p": vs.YUV444P8, "gray": vs.GRAY8}


def y4m_clip(path: str) -> vs.VideoNode:
    """A YUV4MPEG2 file as a clip (its frames in memory), untagged as the stream is, full range if it says so."""
    with open(path, "rb") as f:
        reader = Y4mReader(f)
        header = reader.header
        frames = [bytes(d) for d in reader]
    layout = plane_layout(header.pix_fmt, header.width, header.height)
    dtype = np.dtype("<u2") if layout.sample_bytes == 2 else np.dtype(np.uint8)
    blank = core.std.BlankClip(width=header.width, height=header.height, format=FORMATS[header.pix_fmt],
                               length=len(frames), fpsnum=header.rate.numerator, fpsden=header.rate.denominator,
                               keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        offset = 0
        for p, (w, h) in enumerate(layout.planes):
            np.copyto(np.asarray(out[p]), np.frombuffer(frames[n], dtype, w * h, offset).reshape(h, w))
            offset += w * h * dtype.itemsize
        out.props["_Range"] = 1 if header.color_range == "FULL" else 0
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def rgb_clip(path: str, width: int, height: int, fps: str) -> vs.VideoNode:
    """Raw interleaved RGB24 frames as an RGB24 (planar) clip."""
    data = np.fromfile(path, np.uint8).reshape(-1, height, width, 3)
    rate = Fraction(fps)
    blank = core.std.BlankClip(width=width, height=height, format=vs.RGB24, length=len(data),
                               fpsnum=rate.numerator, fpsden=rate.denominator, keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), data[n, :, :, p])
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def source(spec: dict) -> vs.VideoNode:
    if "blank" in spec:  # a format of VapourSynth's that the filter does not take
        return core.std.BlankClip(width=64, height=48, format=getattr(vs, spec["blank"]), length=4)
    if "y4m" in spec:
        return y4m_clip(spec["y4m"])
    if "rgb" in spec:
        return rgb_clip(spec["rgb"], spec["width"], spec["height"], spec["fps"])
    return core.bs.VideoSource(spec["bs"])


def samples(frame: vs.VideoFrame) -> np.ndarray:
    """A frame's planes one after the other, as bytes (a YUV4MPEG2 frame's layout; RGB as R, G, B planes)."""
    return np.concatenate([np.ascontiguousarray(np.asarray(frame[p])).view(np.uint8).ravel()
                           for p in range(frame.format.num_planes)])


def plain(props: vs.FrameProps) -> dict:
    return {k: (int(v) if isinstance(v, int) else v) for k, v in props.items() if isinstance(v, (int, float, str))}


def fetch(clip: vs.VideoNode, order: str | list, seed: int) -> dict[int, vs.VideoFrame]:
    """The clip's frames, asked for in ``order``."""
    n = clip.num_frames
    if order == "forward":  # VapourSynth's own parallel requests, as vspipe makes them
        return dict(enumerate(clip.frames(prefetch=4, close=False)))
    if order == "threads":  # two threads at once: one forwards, one backwards from the end
        got: dict[int, vs.VideoFrame] = {}
        errors: list[BaseException] = []

        def work(indices: list[int]) -> None:
            try:
                for i in indices:
                    got[i] = clip.get_frame(i)
            except BaseException as e:  # noqa: BLE001 -- reported by the main thread
                errors.append(e)

        workers = [threading.Thread(target=work, args=([i for i in range(n) if i % 2 == 0],)),
                   threading.Thread(target=work, args=([i for i in reversed(range(n)) if i % 2],))]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        if errors:
            raise errors[0]
        return got
    indices = list(range(n))
    if order == "reverse":
        indices.reverse()
    elif order == "random":
        random.Random(seed).shuffle(indices)
    elif isinstance(order, list):
        indices = order
    return {i: clip.get_frame(i) for i in indices}


def main(job_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    core.num_threads = job.get("threads", 2)
    src = source(job["source"])
    summary: dict = {"runs": {}}
    arrays: dict[str, np.ndarray] = {}
    clip = None
    for run in job["runs"]:
        name = run["name"]
        if run.get("order") == "kill":  # the daemon dies (its pid) between two requests of one clip
            os.kill(job["kill_pid"], signal.SIGKILL)
            time.sleep(1)
            continue
        try:
            if clip is None or not run.get("reuse"):
                clip = interpolate(src, **(job.get("kwargs", {}) | run.get("kwargs", {})))
            summary.update(frames=clip.num_frames, fps=str(clip.fps), format=clip.format.name,
                           width=clip.width, height=clip.height)
            frames = fetch(clip, run.get("order", "forward"), run.get("seed", 0))
        except vs.Error as e:  # the filter's Error from interpolate(), VapourSynth's from a frame request
            summary["runs"][name] = {"error": str(e), "type": f"{type(e).__module__}.{type(e).__qualname__}"}
            continue
        indices = sorted(frames)
        arrays[name] = np.stack([samples(frames[i]) for i in indices])
        summary["runs"][name] = {"indices": indices, "props": [plain(frames[i].props) for i in indices]}
    np.savez(job["out"], **arrays)
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
