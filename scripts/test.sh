#!/usr/bin/env bash
# Lint, type-check and test edged (what CI runs). GPU tests are skipped here: see docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-env.sh
. .venv/bin/activate
echo "== ruff";  ruff check edged tests scripts && ruff format --check edged tests scripts
echo "== mypy";  mypy
echo "== mypy (TensorRT code against tensorrt-stubs)"; ./scripts/typecheck-tensorrt.sh
echo "== pytest"; python -m pytest -q "$@"
