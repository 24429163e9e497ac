"""The checked-in gRPC modules are what ``python -m multipassdedup.proto.generate`` makes from mpd.proto."""

from __future__ import annotations

import re
from pathlib import Path

from multipassdedup.proto import generate, mpd_pb2

# Lines naming the generator's version: they differ between grpcio-tools releases, not between schemas.
VERSION_LINE = re.compile(r"(Protobuf Python Version|GRPC_GENERATED_VERSION|_runtime_version\.Domain|^\s+\d+,$)")


def normalised(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not VERSION_LINE.search(line)]


def test_generated_modules_are_current(tmp_path) -> None:
    written = generate.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(generate.GENERATED)
    for name in generate.GENERATED:
        fresh, checked_in = tmp_path / name, generate.PROTO_DIR / name
        assert normalised(fresh) == normalised(checked_in), (
            f"proto/{name} is stale: run `python -m multipassdedup.proto.generate` and commit the result")


def test_generated_modules_import_as_part_of_the_package() -> None:
    grpc_module = (generate.PROTO_DIR / "mpd_pb2_grpc.py").read_text()
    assert "from multipassdedup.proto import mpd_pb2" in grpc_module
    assert mpd_pb2.DESCRIPTOR.package == "multipassdedup.v1"
    assert set(mpd_pb2.DESCRIPTOR.services_by_name["MultiPassDedup"].methods_by_name) == {
        "Interpolate", "ListModels", "Status"}
