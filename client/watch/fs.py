"""Filesystem facts and moves the watcher relies on: mount types, free names, moves that never replace."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

# inotify sees only local changes on these; a remote writer is invisible, so they are polled.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "davfs", "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.glusterfs", "fuse.cephfs",
    "fuse.davfs2", "fuse.gcsfuse", "fuse.juicefs", "fuse.mergerfs",
})

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape_mount_field(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) for each line of /proc/self/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mounts.append((_unescape_mount_field(fields[4]), right.split()[0]))
    return mounts


def filesystem_type(path: str | os.PathLike, mountinfo: str | None = None) -> str:
    """The type of the filesystem `path` lives on ("ext4", "nfs4", ...), or "" when unknown."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return ""
    target = os.path.realpath(path)
    best, best_type = "", ""
    for mount_point, fstype in parse_mountinfo(mountinfo):
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fstype
    return best_type


def is_network_filesystem(fstype: str) -> bool:
    """True for filesystems where inotify misses remote writers."""
    return fstype in NETWORK_FILESYSTEMS


def free_name(directory: Path, name: str) -> Path:
    """`directory/name`, or `directory/stem (2).ext`, ... : the first that does not exist yet."""
    candidate = directory / name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    number = 2
    while os.path.lexists(candidate):
        candidate = directory / (f"{stem} ({number}).{ext}" if ext else f"{stem} ({number})")
        number += 1
    return candidate


def link_no_replace(src: Path, dst: Path) -> bool:
    """Give `src` the extra name `dst` unless `dst` exists (atomic); False when `dst` exists.

    Filesystems without hard links get a check-then-rename instead (then `src` is gone already).
    """
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
            raise
    if os.path.lexists(dst):
        return False
    os.rename(src, dst)
    return True


def move_to_free_name(src: Path, directory: Path, name: str) -> Path:
    """Move `src` into `directory` under `name` or the next free variant of it, never replacing a file."""
    while True:
        dst = free_name(directory, name)
        if link_no_replace(src, dst):
            if os.path.lexists(src) and os.path.samefile(src, dst):
                os.unlink(src)
            return dst


def fsync_path(path: Path) -> None:
    """Flush a file or directory to stable storage (so a power cut cannot undo a finished job)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def writers_of(path: str | os.PathLike[str], proc: str = "/proc") -> list[int]:
    """Ids of the processes of this host that hold ``path`` open for writing, as far as /proc lets us see.

    Every process's file descriptors are read from ``/proc/PID/fd`` (the link names the file) and
    ``/proc/PID/fdinfo`` (the open flags); processes of other users are invisible unless the watcher
    runs as root, and a writer on another host (a network share) never shows here.
    """
    target = os.path.realpath(path)
    writers = []
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != target:
                    continue
                with open(f"{proc}/{pid}/fdinfo/{fd}") as info:
                    flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
            except (OSError, ValueError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                writers.append(int(pid))
                break
    return writers
