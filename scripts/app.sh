#!/usr/bin/env bash
# Install (idempotent) and launch the viewer on the bundled sample: the README's app command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vggt-mv-app "$@"
