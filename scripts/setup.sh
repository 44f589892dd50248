#!/usr/bin/env bash
# One-shot, idempotent set-up of vggt-mv on a fresh machine (CPU).
#   scripts/setup.sh          -> .venv with the package and its runtime deps
#   scripts/setup.sh --dev    -> also the test deps and the Debian packages for browser tests
# torch is pinned to the local CPU wheel (2.13.0) *before* anything that depends on it, so pip
# never resolves an unpinned torch to a multi-GB CUDA build. On a GPU machine, see README.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
VENV=${VGGT_MV_VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
# open3d's import needs libusb; chromium drives the browser tests; libgl/libgomp for opencv/open3d.
dpkg -s libusb-1.0-0 >/dev/null 2>&1 || need_apt+=(libusb-1.0-0)
dpkg -s libgomp1 >/dev/null 2>&1 || need_apt+=(libgomp1)
if [[ $DEV == 1 ]]; then
  dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if ((${#need_apt[@]})); then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install Debian packages: ${need_apt[*]}" >&2
  fi
fi

[[ -x $VENV/bin/python ]] || $PY -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# CPU torch first, unless the user already put a torch (e.g. a CUDA build) in this venv.
$VENV/bin/python -c "import torch" 2>/dev/null || $PIP install "torch==2.13.0"
if [[ $DEV == 1 ]]; then
  $PIP install -e ".[dev]"
else
  $PIP install -e .
fi
echo "setup: done ($VENV)"
