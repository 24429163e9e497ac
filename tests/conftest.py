"""Fixtures any test can ask for: the models, loaded once per session, and a short-path work folder.

What the tests share besides fixtures (clips, PSNR, daemons, commands, waiting) is the package ``helpers``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def rife():
    from multipassdedup.core import load_model

    return load_model("rife", device="cpu")


@pytest.fixture(scope="session")
def gmfss():
    from multipassdedup.core import load_model

    return load_model("gmfss", device="cpu")


@pytest.fixture
def work_dir():
    """A fresh folder outside pytest's tmp_path (short enough for unix socket paths), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="mpd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
