"""Content fingerprints: recognise the same video dropped again without reading all of it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB from each end


def content_fingerprint(path: Path) -> str:
    """sha256 over the size, the first MiB and the last MiB (container headers and indexes live there)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(f"size={size};".encode())
        digest.update(handle.read(CHUNK))
        if size > CHUNK:
            handle.seek(max(CHUNK, size - CHUNK))
            digest.update(handle.read(CHUNK))
    return digest.hexdigest()
