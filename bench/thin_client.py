"""Thin install against the full one: site-packages bytes, and the client's start-up time to its first request.

    python -m multipassdedup.bench.thin_client                 # builds a thin venv in a temporary folder
    python -m multipassdedup.bench.thin_client --thin-venv DIR # reuses (or creates) the thin venv in DIR

Run from the full environment (it starts a daemon with the engine). The thin venv holds the wheel
without the ``engine`` extra and its base dependencies; the full install is that plus what
``multipassdedup[engine]`` adds (torch and its dependencies, grpcio-reflection), counted from this
environment's installed distributions. Start-up to the first request is the wall time of
``mpd-client --status --server ADDR`` (interpreter start, imports, one Status call, exit), the median of
``--runs`` runs, from each environment's own interpreter; for contrast, the in-process engine's start
(torch and the model loaded, one frame pushed) from the full environment.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE_ROOTS = ("torch", "grpcio-reflection")  # the engine extra's requirements (pyproject.toml)


def build_thin_venv(root: Path) -> Path:
    """``root`` as a venv with the wheel and its base dependencies (no engine); returns its interpreter."""
    python = root / "bin" / "python"
    if python.exists():
        return python
    dist = root.parent / f"{root.name}-dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = dist.glob("multipassdedup-*.whl")
    venv.EnvBuilder(with_pip=False).create(root)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)], check=True,
                   capture_output=True)
    return python


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def engine_distributions(thin_names: set[str]) -> set[str]:
    """The distributions the engine extra adds: its requirements and theirs, as installed here, minus the thin
    install's own."""
    seen: set[str] = set()
    todo = list(ENGINE_ROOTS)
    while todo:
        name = normalized(todo.pop())
        if name in seen or name in thin_names:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for requirement in dist.requires or ():
            if "extra ==" in requirement:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return seen


def distribution_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or ():
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def thin_distribution_names(python: Path) -> set[str]:
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                          "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"],
                         capture_output=True, text=True, check=True).stdout
    return {normalized(n) for n in out.split()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wall_time(command: list[str], runs: int, stdin: bytes = b"") -> float:
    """The median wall time of ``command`` over ``runs`` runs (each must exit 0)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(command, input=stdin, capture_output=True)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.decode().strip()}")
    return statistics.median(times)


def one_frame_y4m() -> bytes:
    return b"YUV4MPEG2 W256 H128 F24000:1001 Ip A1:1 C444\n" + (b"FRAME\n" + bytes(256 * 128 * 3)) * 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multipassdedup.bench.thin_client",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--thin-venv", type=Path, help="the thin venv's folder (created when missing)")
    parser.add_argument("--runs", type=int, default=5, help="runs per start-up figure (median; default 5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mpd-thin-") as tmp:
        thin_python = build_thin_venv(args.thin_venv or Path(tmp) / "thin")
        thin_site = site_packages(thin_python)
        thin_bytes = tree_bytes(thin_site)
        added = engine_distributions(thin_distribution_names(thin_python))
        engine_bytes = sum(distribution_bytes(name) for name in added)
        address = f"127.0.0.1:{free_port()}"
        daemon = subprocess.Popen([sys.executable, "-m", "multipassdedup.daemon.main", "--listen", address,
                                   "--device", "cpu", "--models", "rife"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            from ..client.remote.session import probe

            deadline = time.monotonic() + 120
            while not probe(address):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mpd-daemon did not start")
                time.sleep(0.2)
            status = ["-m", "multipassdedup.client.main", "--status", "--server", address]
            thin_start = wall_time([str(thin_python), *status], args.runs)
            full_start = wall_time([sys.executable, *status], args.runs)
        finally:
            daemon.terminate()
            daemon.wait(60)
        local = wall_time([sys.executable, "-m", "multipassdedup.client.main", "--local", "-np", "1", "-q"],
                          max(1, args.runs // 2), one_frame_y4m())
    mib = 1 << 20
    print(f"site-packages: thin {thin_bytes / mib:.0f} MiB ({thin_site}); full = thin + engine extra "
          f"{engine_bytes / mib:.0f} MiB ({', '.join(sorted(added))}) = {(thin_bytes + engine_bytes) / mib:.0f} MiB")
    print(f"start-up to the first request (mpd-client --status, median of {args.runs}): thin {thin_start:.2f} s, "
          f"full {full_start:.2f} s; in-process start for contrast (torch + rife loaded, 2 frames at 256x128): "
          f"{local:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
