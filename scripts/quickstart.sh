#!/usr/bin/env bash
# The README's first command: installs keras-swift into .venv (with the Debian and PyPI
# packages it needs) and trains the digits convnet on the Swift backend.
set -euo pipefail
cd "$(dirname "$0")/.."

# OpenBLAS for the engine; HDF5 for SwiftKeras's Keras files (.keras, .weights.h5).
if ! pkg-config --exists openblas hdf5 2>/dev/null; then
    sudo=$(command -v sudo || true)
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq libopenblas-dev libhdf5-dev pkg-config >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q . scikit-learn
KERAS_BACKEND=swift .venv/bin/python Examples/python/digits_convnet.py
