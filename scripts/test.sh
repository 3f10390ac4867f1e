#!/usr/bin/env bash
# The project's test command (README, and .ci/run on a clean clone): installs what the tests
# need, then runs the Swift tests, the Python tests and a slice of Keras's own test suite
# against KERAS_BACKEND=swift.
set -euo pipefail
cd "$(dirname "$0")/.."

# OpenBLAS for the engine; HDF5 for SwiftKeras's Keras files (.keras, .weights.h5).
if ! pkg-config --exists openblas hdf5 2>/dev/null; then
    sudo=$(command -v sudo || true)
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq libopenblas-dev libhdf5-dev pkg-config >/dev/null
fi
# Open MPI for the multi-process keras.distribution tests (python/tests/test_distribution_mpi.py).
if ! command -v mpirun >/dev/null 2>&1; then
    sudo=$(command -v sudo || true)
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi

venv=.venv-test
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r requirements-test.txt

echo "== import contracts of the Python backend (python/.importlinter)"
(cd python && "../$venv/bin/lint-imports" --no-cache)

# The Swift tests under AddressSanitizer (with leak checks), then ThreadSanitizer: each a debug
# build of its own (1.5 to 3 minutes on 2 cores). No plain run besides: it would check nothing
# the ASan run does not, for one more build (docs/testing.md "Sanitizers").
echo "== Swift tests under AddressSanitizer and ThreadSanitizer"
swift build --build-tests --sanitize=address --scratch-path .build-asan
LSAN_OPTIONS=suppressions=$PWD/Tests/lsan-suppressions.txt swift test --skip-build --sanitize=address --scratch-path .build-asan
swift build --build-tests --sanitize=thread --scratch-path .build-tsan
TSAN_OPTIONS=suppressions=$PWD/Tests/tsan-suppressions.txt swift test --skip-build --sanitize=thread --scratch-path .build-tsan

# One engine build serves the venv and the self-contained wheel checked at the end: both
# variants, as scripts/build_wheel.sh builds them, so test_hwcaps.py compares the two.
echo "== build and install keras-swift"
rm -rf build/wheel-raw
KERAS_SWIFT_HWCAPS=x86-64-v3 "$venv/bin/pip" wheel -q --no-deps -w build/wheel-raw .
"$venv/bin/pip" install -q --force-reinstall --no-deps build/wheel-raw/keras_swift-*.whl

# The tests that run the Swift executables (keras-swift, run-graph, DigitsConvnet) run the
# ASan build's: there is no plain debug build (above).
echo "== Python tests"
KERAS_SWIFT_BIN_DIR="$PWD/.build-asan/debug" KERAS_SWIFT_BIN_SANITIZE=address ASAN_OPTIONS=detect_leaks=0 \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests

# The same wheel repaired by auditwheel (OpenBLAS vendored), installed into a fresh venv and
# run with the system OpenBLAS hidden (README "Wheel"; about 2 minutes).
echo "== self-contained wheel (scripts/build_wheel.sh, scripts/test_wheel.sh)"
KERAS_SWIFT_RAW_WHEEL=$(ls build/wheel-raw/keras_swift-*.whl) bash scripts/build_wheel.sh
bash scripts/test_wheel.sh

# A bounded slice of the coverage-guided fuzzer (docs/testing.md "Fuzzing"); a finding exits non-zero
# and its input is printed (base64) in the log. Run in a scratch directory: libFuzzer writes
# its artifacts to the working directory.
echo "== Fuzzing slice (scripts/fuzz.py)"
fuzz_dir=$(mktemp -d)
(cd "$fuzz_dir" && "$OLDPWD/$venv/bin/python" "$OLDPWD/scripts/fuzz.py" -seed=1 -runs=300000 -max_total_time=60 \
    -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 corpus)
rm -rf "$fuzz_dir"

# A representative slice that runs in a few minutes; the full suite is the README's
# conformance command. The runner exits non-zero on any failure, crash or timeout, except
# tests that fail only because they import a framework this venv lacks (tensorflow: e.g.
# core_test's ragged-tensor test); the table still counts those as failures.
echo "== Keras conformance slice (KERAS_BACKEND=swift)"
k=keras/src
"$venv/bin/python" python/tests/conformance/run.py --python "$PWD/$venv/bin/python" --backend swift -j 2 --timeout 600 --allow-missing-frameworks \
    $k/ops/ops_test.py $k/ops/core_test.py $k/ops/linalg_test.py $k/ops/operation_test.py \
    $k/ops/function_test.py $k/ops/symbolic_arguments_test.py $k/ops/node_test.py $k/ops/einops_test.py \
    $k/ops/operation_utils_test.py $k/tree $k/random/seed_generator_test.py $k/backend/tests \
    $k/backend/common $k/losses $k/activations $k/layers/pooling $k/layers/normalization \
    $k/layers/merging --ignore $k/backend/common/variables_test.py
