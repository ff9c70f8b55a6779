#!/usr/bin/env bash
# One command for a fresh GPU machine, run from anywhere in the checkout (not installed):
#   bash benchmarks/device_check.sh OUT_DIR [--commit SHA] [--dry] [--help]
# Writes at most 8 files into OUT_DIR and prints a summary last (docs/benchmarks.md).
set -u
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PYTHON" -m benchmarks.device_check "$@"
