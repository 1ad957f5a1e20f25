#!/usr/bin/env bash
# Type-check edged's TensorRT code against tensorrt-stubs (TensorRT itself cannot be installed here).
# The stubs ship without py.typed and with parameters named `in` (a syntax error), so plain mypy would
# treat `tensorrt` as Any: copy them, rename those parameters, and point MYPYPATH at the copy.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
[ -f "$site/tensorrt_bindings/tensorrt.pyi" ] || { echo "tensorrt-stubs not installed: pip install --no-deps tensorrt-stubs"; exit 1; }
stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
mkdir -p "$stubs/tensorrt" "$stubs/tensorrt_bindings"
cp "$site"/tensorrt_bindings/*.pyi "$stubs/tensorrt_bindings/"
cp "$site"/tensorrt/*.pyi "$stubs/tensorrt/" 2>/dev/null || echo "from tensorrt_bindings.tensorrt import *" > "$stubs/tensorrt/__init__.pyi"
sed -i -E 's/\(([^()]*)\bin: /(\1in_: /g; s/, in: /, in_: /g' "$stubs/tensorrt_bindings/tensorrt.pyi"
# One signature puts a required parameter after defaulted ones (also a syntax error in a .pyi).
sed -i 's/power: Weights = None, channel_axis: int)/power: Weights = None, channel_axis: int = ...)/' \
  "$stubs/tensorrt_bindings/tensorrt.pyi"
MYPYPATH="$stubs" mypy --follow-imports=silent edged/infer/tensorrt.py edged/infer/tensorrt_build.py
