"""mpd-watch building blocks on real files: names, settle, filesystem moves, fingerprints, journal, config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from multipassdedup.client.errors import WatchConfigError
from multipassdedup.client.watch.config import WatchConfig, build_folder, load_config_file
from multipassdedup.client.watch.fingerprint import content_fingerprint
from multipassdedup.client.watch.fs import (
    filesystem_type,
    free_name,
    is_network_filesystem,
    link_no_replace,
    move_to_free_name,
    parse_mountinfo,
)
from multipassdedup.client.watch.journal import JobState, Journal
from multipassdedup.client.watch.names import is_temporary_name
from multipassdedup.client.watch.outcome import OutcomeKind, classify_exit
from multipassdedup.client.watch.settle import FileIdentity, SettleTracker


@pytest.mark.parametrize("name, temporary", [
    ("episode.mkv", False), ("Episode 01 [1080p].mp4", False), ("movie.part1.mkv", False),
    ("episode.mkv.part", True), ("episode.mkv.PART", True), ("episode.partial", True), ("x.tmp", True),
    ("x.mkv.crdownload", True), ("x.mkv.filepart", True), (".hidden.mkv", True), (".syncthing.x.mkv.tmp", True),
    ("~syncthing~x.mkv.tmp", True), ("~$lock.mkv", True), ("", True),
])
def test_temporary_names(name: str, temporary: bool) -> None:
    assert is_temporary_name(name) is temporary


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_settle_needs_unchanged_checks_spanning_the_settle_time() -> None:
    clock = FakeClock()
    tracker = SettleTracker(5.0, clock)
    a = FileIdentity(1, 10, 100, 1000)
    tracker.observe("/in/a", a)
    assert not tracker.is_settled("/in/a")          # one check is never enough
    clock.now += 4.9
    tracker.observe("/in/a", a)
    assert not tracker.is_settled("/in/a")          # not yet the settle time
    clock.now += 0.2
    tracker.observe("/in/a", a)
    assert tracker.settled() == [("/in/a", a)]
    # growth, a new mtime or a new inode all restart the clock
    for changed in (FileIdentity(1, 10, 101, 1000), FileIdentity(1, 10, 101, 2000), FileIdentity(1, 11, 101, 2000)):
        tracker.observe("/in/a", changed)
        assert not tracker.is_settled("/in/a")
        clock.now += 5.1
        tracker.observe("/in/a", changed)
        assert tracker.is_settled("/in/a")
    # an event restarts the clock even when stat cannot see a difference
    tracker.changed("/in/a")
    tracker.observe("/in/a", FileIdentity(1, 11, 101, 2000))
    assert not tracker.is_settled("/in/a")
    tracker.observe("/in/a", None)
    assert "/in/a" not in tracker and tracker.settled() == []


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /srv/drop rw,relatime shared:5 - nfs4 nas:/export/drop rw,vers=4.2
31 22 0:41 / /srv/my\\040share rw - cifs //nas/share rw
32 30 0:42 / /srv/drop/local rw - tmpfs tmpfs rw
"""


def test_mountinfo_finds_the_innermost_mount_and_network_types() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert ("/srv/my share", "cifs") in mounts
    assert filesystem_type("/srv/drop/anime", MOUNTINFO) == "nfs4"
    assert filesystem_type("/srv/drop/local/x", MOUNTINFO) == "tmpfs"
    assert filesystem_type("/srv/my share/x", MOUNTINFO) == "cifs"
    assert filesystem_type("/srv/dropbox", MOUNTINFO) == "ext4"
    assert is_network_filesystem("nfs4") and is_network_filesystem("cifs") and is_network_filesystem("fuse.sshfs")
    assert not is_network_filesystem("ext4") and not is_network_filesystem("tmpfs")


def test_filesystem_type_of_a_real_path(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path) != ""


def test_moves_never_replace(tmp_path: Path) -> None:
    (tmp_path / "a.mkv").write_text("old")
    assert free_name(tmp_path, "a.mkv") == tmp_path / "a (2).mkv"
    assert free_name(tmp_path, "b.mkv") == tmp_path / "b.mkv"
    src = tmp_path / "src"
    src.write_text("new")
    assert not link_no_replace(src, tmp_path / "a.mkv")
    assert (tmp_path / "a.mkv").read_text() == "old"
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "a.mkv").write_text("taken")
    moved = move_to_free_name(src, sub, "a.mkv")
    assert moved == sub / "a (2).mkv" and moved.read_text() == "new" and not src.exists()
    assert (sub / "a.mkv").read_text() == "taken"
    noext = tmp_path / "noext"
    noext.write_text("x")
    assert free_name(tmp_path, "noext") == tmp_path / "noext (2)"


def test_fingerprint_sees_size_head_and_tail(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    (tmp_path / "a").write_bytes(big)
    (tmp_path / "b").write_bytes(big)
    (tmp_path / "c").write_bytes(big[:-1] + bytes([big[-1] ^ 1]))
    (tmp_path / "d").write_bytes(big[:-1])
    (tmp_path / "e").write_bytes(b"small")
    prints = {name: content_fingerprint(tmp_path / name) for name in "abcde"}
    assert prints["a"] == prints["b"]
    assert len({prints["a"], prints["c"], prints["d"], prints["e"]}) == 4


def test_journal_rows_survive_reopening(tmp_path: Path) -> None:
    journal = Journal.in_state_dir(tmp_path / "state")
    ident = FileIdentity(1, 2, 3, 4)
    job = journal.begin_claim("/in", "a.mkv", "/in/a.mkv", "/in/processing/x-a.mkv", ident, "opts")
    assert job.state is JobState.CLAIMING and job.attempts == 0 and job.identity == ident
    job = journal.update(job, state=JobState.RUNNING, attempts=1, fingerprint="f" * 64)
    journal.close()
    journal = Journal.in_state_dir(tmp_path / "state")
    assert [j.id for j in journal.unfinished()] == [job.id]
    again = journal.get(job.id)
    assert again.state is JobState.RUNNING and again.attempts == 1
    done = journal.update(again, state=JobState.DONE, disposition="/in/a.mkv", output_path="/out/a.mkv")
    assert done.finished_at is not None and journal.unfinished() == []
    other = journal.begin_claim("/in", "b.mkv", "/in/b.mkv", "/p/b", FileIdentity(1, 5, 3, 4), "opts")
    assert journal.done_with_same_content("f" * 64, "opts", other.id).id == job.id
    assert journal.done_with_same_content("f" * 64, "other-opts", other.id) is None
    assert journal.is_kept_source("/in/a.mkv", ident)
    assert not journal.is_kept_source("/in/a.mkv", FileIdentity(1, 2, 3, 5))
    assert journal.counts() == {"done": 1, "claiming": 1}
    forgotten = journal.forget("f" * 8)
    assert [j.id for j in forgotten] == [job.id] and forgotten[0].forgotten == 1
    assert journal.done_with_same_content("f" * 64, "opts", other.id) is None
    assert not journal.is_kept_source("/in/a.mkv", ident)
    with pytest.raises(ValueError):
        journal.forget("abc")
    with pytest.raises(KeyError):
        journal.update(job, no_such_field=1)


def test_config_file_defaults_folders_and_errors(tmp_path: Path) -> None:
    config = tmp_path / "watch.toml"
    config.write_text("""
state_dir = "/var/lib/x"
concurrency = 2
server = "unix:///run/multipassdedup/mpd.sock"
fps = "60000/1001"
after = "delete"

[[folder]]
in = "/srv/a/in"
out = "/srv/a/out"

[[folder]]
in = "/srv/b/in"
out = "/srv/b/out"
after = "keep"
times = 2.5
fps = ""
scdet = false
client_args = ["--crf", "18"]
""")
    watch, folders = load_config_file(config)
    assert watch == {"state_dir": "/var/lib/x", "concurrency": 2}
    a, b = folders
    assert a.after == "delete" and b.after == "keep"
    assert a.processing_dir == Path("/srv/a/in/processing") and a.failed_dir == Path("/srv/a/in/failed")
    argv = b.client_argv(Path("/p/x.mkv"), Path("/o/x.mkv"))
    assert argv[-12:] == ["-i", "/p/x.mkv", "-o", "/o/x.mkv", "--progress", "-t", "2.5", "--no-scdet", "--crf",
                          "18", "--server", "unix:///run/multipassdedup/mpd.sock"]
    assert "-fps" in a.client_argv(Path("i"), Path("o")) and a.options_digest() != b.options_digest()
    assert "--no-compensate-delay" not in a.client_argv(Path("i"), Path("o")), "compensation is the default"
    reference = build_folder({"in": "/a", "out": "/b", "compensate_delay": False}, "cli")
    assert "--no-compensate-delay" in reference.client_argv(Path("i"), Path("o"))
    config.write_text('[[folder]]\nin = "/a"\nout = "/b"\nspeed = 3\n')
    with pytest.raises(WatchConfigError, match="speed"):
        load_config_file(config)
    with pytest.raises(WatchConfigError, match="either server or local"):
        build_folder({"in": "/a", "out": "/b", "server": "x:1", "local": True}, "cli").validate()
    with pytest.raises(WatchConfigError, match="need"):
        build_folder({"in": "/a"}, "cli")
    with pytest.raises(WatchConfigError, match="after"):
        build_folder({"in": "/a", "out": "/b", "after": "archive"}, "cli").validate()


def test_a_state_dir_inside_a_shared_folder_is_refused() -> None:
    folder = build_folder({"in": "/srv/drop/in", "out": "/srv/drop/out", "processing": "/srv/claimed"}, "cli")
    WatchConfig(folders=(folder,), state_dir=Path("/var/lib/mpd-watch")).validate()  # local and apart: fine
    for inside, setting in (("/srv/drop/in/.state", "in"), ("/srv/drop/out", "out"),
                            ("/srv/claimed/x", "processing"), ("/srv/drop/in/failed/s", "in")):
        with pytest.raises(WatchConfigError, match=f"inside the {setting} folder"):
            WatchConfig(folders=(folder,), state_dir=Path(inside)).validate()


def test_exit_codes_follow_the_client_contract() -> None:
    assert classify_exit(0).kind is OutcomeKind.SUCCESS
    assert classify_exit(65).kind is OutcomeKind.PERMANENT
    assert classify_exit(2).kind is OutcomeKind.PERMANENT
    for transient in (69, 74, 75):
        assert classify_exit(transient).kind is OutcomeKind.TRANSIENT
    assert classify_exit(74).loud
    assert classify_exit(1).kind is OutcomeKind.ATTEMPT
    killed = classify_exit(-signal.SIGKILL)
    assert killed.kind is OutcomeKind.ATTEMPT and "SIGKILL" in killed.meaning


def test_the_watcher_loads_neither_the_engine_nor_the_daemon() -> None:
    """mpd-watch talks to the daemon only through mpd-client processes: it starts without torch, gRPC or daemon/."""
    code = ("import pkgutil, sys, multipassdedup.client.watch as w\n"
            "for m in pkgutil.iter_modules(w.__path__): __import__(f'multipassdedup.client.watch.{m.name}')\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'grpc', 'numpy')\n"
            "             or n.startswith(('multipassdedup.core', 'multipassdedup.daemon', 'multipassdedup.proto'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
