"""File mode's output file: never replaced without leave (ffmpeg's -y / -n, else a prompt on a terminal),
written under a hidden temporary name in its folder, and published by a rename only when complete.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import TextIO

from ..errors import OutputError, OutputExistsError


class Overwrite(Enum):
    """What to do when the output exists: -y, -n, or neither (ask on a terminal, refuse elsewhere)."""

    ASK = "ask"
    ALWAYS = "always"
    NEVER = "never"


def output_exists(dst: Path) -> bool:
    return os.path.lexists(dst)


def may_replace(dst: Path, policy: Overwrite, stdin: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Decide, before any work, whether an existing ``dst`` may be replaced.

    Returns False when ``dst`` does not exist (it must still not be clobbered if something
    creates it meanwhile), True when it exists and may be replaced; raises OutputExistsError
    (exit 73) when it exists and may not.
    """
    if not output_exists(dst):
        return False
    if policy is Overwrite.ALWAYS:
        return True
    if policy is Overwrite.NEVER:
        raise OutputExistsError(f"{dst} exists; not overwriting it (-n)")
    stdin = stdin if stdin is not None else sys.stdin
    stderr = stderr if stderr is not None else sys.stderr
    if not stdin.isatty():
        raise OutputExistsError(f"{dst} exists; pass -y to overwrite it (-n never does)")
    stderr.write(f"mpd-client: {dst} exists. Overwrite? [y/N] ")
    stderr.flush()
    answer = stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    raise OutputExistsError(f"not overwriting {dst}")


def temporary_output(dst: Path) -> Path:
    """An empty hidden file next to ``dst`` (same folder, so the final rename is atomic), with ``dst``'s suffix."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=f".partial{dst.suffix}")
    except OSError as e:
        raise OutputError(f"cannot write in {dst.parent}: {e.strerror or e}") from None
    os.close(fd)
    return Path(tmp)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Filesystems without hard links answer these; there the no-clobber check is a look before the rename.
NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def publish(tmp: Path, dst: Path, replace: bool) -> None:
    """Give the finished ``tmp`` a normal file's mode and move it to ``dst``.

    With ``replace`` an existing ``dst`` is replaced atomically. Without, a file that appeared at
    ``dst`` while we worked is kept (OutputExistsError): the hard link fails rather than clobbering it.
    """
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp made it private
        if replace:
            os.replace(tmp, dst)
            return
        try:
            os.link(tmp, dst)
        except FileExistsError:
            raise OutputExistsError(f"{dst} appeared while converting; not overwriting it (-y would)") from None
        except OSError as e:
            if e.errno not in NO_LINKS:
                raise
            if output_exists(dst):
                raise OutputExistsError(f"{dst} appeared while converting; not overwriting it (-y would)") from None
            os.replace(tmp, dst)
            return
        tmp.unlink()
    except OSError as e:
        raise OutputError(f"cannot move the finished file to {dst}: {e.strerror or e}") from None
