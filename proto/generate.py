"""Regenerate ``mpd_pb2.py`` and ``mpd_pb2_grpc.py`` from ``mpd.proto`` (needs grpcio-tools).

Run ``python -m multipassdedup.proto.generate`` after editing the schema; the generated modules
are checked in so that installing the package needs no compiler.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILE = PROTO_DIR / "mpd.proto"
GENERATED = ("mpd_pb2.py", "mpd_pb2_grpc.py")
# The schema is compiled as multipassdedup/proto/mpd.proto so that the generated gRPC module
# imports its messages as ``multipassdedup.proto.mpd_pb2`` rather than a bare ``mpd_pb2``.
PACKAGE_PATH = Path("multipassdedup") / "proto"


def generate(out_dir: Path) -> list[Path]:
    """Compile mpd.proto into ``out_dir``; returns the generated files."""
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="mpd-proto-") as tmp:
        include = Path(tmp) / "include"
        build = Path(tmp) / "build"
        (include / PACKAGE_PATH).mkdir(parents=True)
        build.mkdir()
        shutil.copyfile(PROTO_FILE, include / PACKAGE_PATH / PROTO_FILE.name)
        well_known = Path(protoc.__file__).resolve().parent / "_proto"
        args = ["grpc_tools.protoc", f"-I{include}", f"-I{well_known}", f"--python_out={build}",
                f"--grpc_python_out={build}", str(PACKAGE_PATH / PROTO_FILE.name)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_FILE}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            target = out_dir / name
            shutil.copyfile(build / PACKAGE_PATH / name, target)
            written.append(target)
    return written


def main() -> int:
    for path in generate(PROTO_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
