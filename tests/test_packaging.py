"""A wheel built from the repository installs into a fresh venv and imports as multipassdedup.*."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from helpers.wheel import build_wheel


def test_wheel_installs_and_imports_in_fresh_venv(tmp_path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert "multipassdedup/weights/manifest.json" in names
    assert "multipassdedup/bench/cadence.py" in names and "multipassdedup/units.py" in names
    assert "multipassdedup/client/watch/main.py" in names and "multipassdedup/client/pipe/y4m.py" in names
    assert not any(n.startswith(("core/", "tests/")) for n in names), "nothing installs as a bare top-level package"

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True)
    # Dependencies (torch, grpc, ...) come from this venv's site-packages, added as a plain path:
    # its .pth files (and so the editable install of the repository) are not processed.
    site = Path(sysconfig.get_paths()["purelib"])
    fresh_site = next((env / "lib").glob("python3*/site-packages"))
    (fresh_site / "deps.pth").write_text(f"{site}\n")
    code = ("import multipassdedup, multipassdedup.core, multipassdedup.weights, multipassdedup.daemon, "
            "multipassdedup.client, multipassdedup.proto, multipassdedup.bench.synthetic, importlib.util\n"
            "import multipassdedup.daemon.main, multipassdedup.client.main\n"
            "import multipassdedup.client.remote.daemon_status\n"
            "from multipassdedup.core import available_models; assert {'gmfss', 'rife'} <= set(available_models())\n"
            "print(multipassdedup.__file__)\n"
            "assert importlib.util.find_spec('core') is None\n"
            "from multipassdedup.weights import Manifest; assert Manifest.load().files\n")
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(fresh_site) in proc.stdout
    help_ = subprocess.run([str(env / "bin" / "mpd-weights"), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "fetch" in help_.stdout
    watch_help = subprocess.run([str(env / "bin" / "mpd-watch"), "--help"], capture_output=True, text=True)
    assert watch_help.returncode == 0 and "--config" in watch_help.stdout
