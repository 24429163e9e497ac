"""Many watchers, one folder: two mpd-watch processes (as on two hosts) share a drop folder and a fleet of two
daemons; every file is processed exactly once, by one watcher, in one daemon session."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg

from helpers.waiting import wait_until
from helpers.watching import DropFolder, expected_frames, log_of, stop, video_facts
from multipassdedup.client.watch.journal import JobState
from multipassdedup.daemon.options import DaemonOptions
from multipassdedup.daemon.server import DaemonServer

FRAMES = 6
SOURCES = ("testsrc", "testsrc2", "smptebars", "rgbtestsrc", "mandelbrot")


def make_clip(path: Path, source: str) -> bytes:
    """A tiny 64x64 H.264 clip at 24000/1001 fps made by the real ffmpeg; its bytes."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                    "-i", f"{source}=size=64x64:rate=24000/1001", "-frames:v", str(FRAMES),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path.read_bytes()


def test_two_watchers_and_a_fleet_of_two_daemons_process_each_file_once(tmp_path: Path, rife) -> None:
    daemons = [DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start() for _ in range(2)]
    try:
        fleet = ",".join(d.addresses[0] for d in daemons)
        clips = {f"ep{i}.mkv": make_clip(tmp_path / f"clip{i}.mkv", source) for i, source in enumerate(SOURCES)}
        drop = DropFolder(tmp_path)
        states = [tmp_path / "host-a-state", tmp_path / "host-b-state"]   # each watcher its own, off the share
        watchers = [drop.start("--server", fleet, "-m", "rife", "-fps", "60", state=state, client=None)
                    for state in states]
        try:
            for watcher in watchers:
                wait_until(lambda w=watcher: "mpd-watch ready" in log_of(w), 60, "a watcher to start")
            for name, data in clips.items():
                drop.drop(name, data)                                      # all at once: both race to claim

            def all_done():
                jobs = [j for s in states if s.exists() for j in drop.jobs(s)]
                return jobs if sum(j.state is JobState.DONE for j in jobs) == len(clips) else None
            jobs = wait_until(all_done, 400, "every file done by one of the watchers", interval=0.2)
        finally:
            assert all(stop(w, timeout=60) == 0 for w in watchers)
        assert sorted(j.name for j in jobs) == sorted(clips)               # one journal row per file, both journals
        assert all(j.attempts == 1 for j in jobs)
        per_watcher = [[j.name for j in drop.jobs(s)] for s in states]
        assert not set(per_watcher[0]) & set(per_watcher[1])
        assert sorted(p.name for p in drop.outbox.iterdir()) == sorted(clips)   # no "NAME (2).mkv", no leftovers
        for name in clips:
            assert video_facts(drop.outbox / name) == (expected_frames(FRAMES), Fraction(60), (64, 64))
        assert sorted(os.listdir(drop.inbox / "done")) == sorted(clips)
        assert os.listdir(drop.inbox / "processing") == []
        assert sum(d.registry.created for d in daemons) == len(clips)
    finally:
        for d in daemons:
            d.stop(0)
