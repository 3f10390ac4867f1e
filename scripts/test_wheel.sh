#!/usr/bin/env bash
# Installs the repaired wheel (dist/keras_swift-*manylinux*.whl, from scripts/build_wheel.sh)
# into a fresh venv and trains the digits convnet with the system OpenBLAS out of the loader's
# reach: its directory is covered by an empty tmpfs in a private mount namespace (root or
# user namespaces needed; without them the run is the same minus the hiding). Passes when
# ldd resolves libopenblas inside the wheel's keras_swift.libs/ for both engine builds, the
# system copy cannot be loaded, the process mapped no OpenBLAS from outside the wheel, and
# the C SDK and show_config tests pass against the installed wheel.
#   bash scripts/test_wheel.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
wheel=$(ls -t dist/keras_swift-*manylinux*.whl | head -1)
venv=$(mktemp -d)/venv
"$python" -m venv "$venv"
"$venv/bin/pip" install -q "$wheel" scikit-learn
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
echo "== $wheel: $(du -sk "$site/_swiftkeras" "$site"/keras_swift.libs | awk '{s+=$1} END {printf "%.1f MB", s/1024}') installed (_swiftkeras + keras_swift.libs)"
if [ "$(uname -m)" = x86_64 ] && [ ! -f "$site/_swiftkeras/glibc-hwcaps/x86-64-v3/libTensorEngineC.so" ]; then
    echo "the wheel lacks the x86-64-v3 engine (build it with scripts/build_wheel.sh)"; exit 1
fi
for lib in "$site"/_swiftkeras/libTensorEngineC.so "$site"/_swiftkeras/glibc-hwcaps/*/libTensorEngineC.so; do
    [ -f "$lib" ] || continue
    resolved=$(readlink -f "$(ldd "$lib" | awk '/libopenblas/ {print $3}')")
    echo "ldd ${lib#"$site"/}: libopenblas -> ${resolved#"$site"/}"
    case "$resolved" in "$(readlink -f "$site")"/keras_swift.libs/*) ;; *) echo "libopenblas resolves outside the wheel"; exit 1 ;; esac
done

system_blas=$(dirname "$(readlink -f /usr/lib/x86_64-linux-gnu/libopenblas.so.0 2>/dev/null || echo /nonexistent/x)")
check='
import ctypes, os, sys
try:
    ctypes.CDLL("libopenblas.so.0")
    hidden = False
except OSError:
    hidden = True
print("system libopenblas loadable:", not hidden)
if sys.argv[1] == "1" and not hidden:
    sys.exit("the system libopenblas is still loadable")
import runpy
runpy.run_path("Examples/python/digits_convnet.py", run_name="__main__")
maps = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line and "/" in line}
outside = [m for m in maps if "keras_swift.libs" not in m and ".libs/libscipy_openblas" not in m]
print("openblas mapped:", sorted(maps))
if outside:
    sys.exit(f"OpenBLAS loaded from outside the wheel: {outside}")
import keras_swift
keras_swift.show_config()
'
if [ -d "$system_blas" ] && unshare -m true 2>/dev/null; then
    unshare -m sh -c "mount -t tmpfs none '$system_blas' && KERAS_BACKEND=swift '$venv/bin/python' -c '$check' 1"
else
    echo "(cannot hide $system_blas here: checking which OpenBLAS gets mapped only)"
    KERAS_BACKEND=swift "$venv/bin/python" -c "$check" 0
fi
# The C SDK and show_config from the installed wheel (a C program built with its
# get_include()/get_lib() and pkg-config file, run against the vendored OpenBLAS).
"$venv/bin/pip" install -q pytest
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests/test_c_sdk.py python/tests/test_config.py
rm -rf "$(dirname "$venv")"
