"""Helpers for the daemon tests: reference runs, raw protocol sessions, status polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from fractions import Fraction

import grpc
import numpy as np

from multipassdedup.client.remote.session import RemoteEngine, call_metadata, open_channel
from multipassdedup.core import MultiPassDedup
from multipassdedup.proto import mpd_pb2, mpd_pb2_grpc

FILM = Fraction(24000, 1001)
H, W = 64, 128


def run_local(model, frames: Iterable[np.ndarray], **kw) -> list[np.ndarray]:
    """The in-process engine's output, with the daemon's defaults (delay compensation on)."""
    kw = {"n_pass": 3, "src_fps": FILM, "dst_fps": 60, "compensate_delay": True} | kw
    pipe = MultiPassDedup(model, **kw)
    out = []
    for f in frames:
        out += pipe.push(f)
    return out + pipe.flush()


def run_remote(address: str, frames: Iterable[np.ndarray], **kw) -> tuple[list[np.ndarray], RemoteEngine]:
    kw = {"n_pass": 3, "src_fps": FILM, "dst_fps": 60} | kw
    engine = RemoteEngine(address, **kw)
    out = []
    for f in frames:
        out += engine.push(f)
    return out + engine.flush(), engine


def config(**fields) -> mpd_pb2.SessionConfig:
    """A valid 128x64 rgb24 config unless ``fields`` say otherwise."""
    base = dict(model="rife", n_pass=3, src_fps=mpd_pb2.Rational(num=24000, den=1001),
                dst_fps=mpd_pb2.Rational(num=60, den=1), width=W, height=H, pixel_format=mpd_pb2.RGB24)
    base.update(fields)
    return mpd_pb2.SessionConfig(**{k: v for k, v in base.items() if v is not None})


def messages(cfg: mpd_pb2.SessionConfig | None, frames: Iterable[bytes]) -> Iterable[mpd_pb2.ClientMessage]:
    if cfg is not None:
        yield mpd_pb2.ClientMessage(config=cfg)
    for data in frames:
        yield mpd_pb2.ClientMessage(frame=mpd_pb2.InputFrame(data=data))


def raw_session(address: str, requests: Iterable[mpd_pb2.ClientMessage], token: str | None = None,
                root_cert: bytes | None = None) -> tuple[list[mpd_pb2.ServerMessage], grpc.RpcError | None]:
    """Every reply of one Interpolate call, and the error it ended with (None if it ended OK)."""
    channel = open_channel(address, root_cert)
    replies: list[mpd_pb2.ServerMessage] = []
    try:
        call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(iter(requests), metadata=call_metadata(token),
                                                                    timeout=120)
        for reply in call:
            replies.append(reply)
    except grpc.RpcError as err:
        return replies, err
    finally:
        channel.close()
    return replies, None


def status(address: str, token: str | None = None) -> mpd_pb2.StatusResponse:
    channel = open_channel(address)
    try:
        return mpd_pb2_grpc.MultiPassDedupStub(channel).Status(mpd_pb2.StatusRequest(), metadata=call_metadata(token),
                                                               timeout=10)
    finally:
        channel.close()


def stream_until(stop: threading.Event, address: str, clip: list[np.ndarray], errors: list[Exception],
                 token: str | None = None, **kw) -> None:
    """One client's session pushing ``clip`` over and over until ``stop`` is set (for a thread); errors collected."""
    try:
        engine = RemoteEngine(address, token=token, **({"n_pass": 2, "src_fps": FILM, "dst_fps": 60} | kw))
        i = 0
        while not stop.is_set():
            engine.push(clip[i % len(clip)])
            i += 1
        engine.close()
    except Exception as e:  # noqa: BLE001 - the test checks them
        errors.append(e)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    peak = 65535.0 if a.dtype == np.uint16 else 255.0
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)
