#!/usr/bin/env bash
# GPU check for the lent GPU machine (design section 9: one H100; its image has JAX, PyTorch, CUDA and Python 3.12,
# no TensorFlow, no Ray, no pydantic, no network). In ONE call it:
#   1. installs the Keras wheels carried in .whl/ into /tmp/site (skipped when .whl/ is absent or SKIP_WHEELS=1);
#   2. prints the card (nvidia-smi --query-gpu=name --format=csv);
#   3. runs benchmarks/gpu_packed.py with KERAS_BACKEND=jax: the five seed-protocol trainings packed onto the one
#      GPU as five processes at once (the project's trainer settings), then the same five one after another in one
#      process with plain model.fit(validation_split=...), and prints the table: wall s packed vs sequential, the
#      ratio, per-model epochs and test accuracy, and whether packed five <= 45 s (issue 6's goal).
#
# Usage: bash benchmarks/gpu_check.sh [DATA_DIR]       (DATA_DIR default .data/fashion-mnist: the four .gz files)
# Knobs: MAX_EPOCHS, TRAIN_ROWS, TEST_ROWS (default: the full protocol, 100 epochs on all rows), CHECKPOINT=1
#        (save a model.keras after each epoch, as the trial does), ARCHITECTURES, RUN_SEQUENTIAL=1, GOAL_PACKED_S=45,
#        KERAS_BACKEND=jax, PYTHON=python3, SKIP_WHEELS=0. If $OUT is set, the table is also written to
#        $OUT/gpu_check.md (the device tool brings $OUT back).
#
# Prepare the carried files ONCE on this (CPU) machine, in the repo root:
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude   # listed there, never committed
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl keras==3.15.1 namex optree
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# (optree's wheel is manylinux_2_27/2_28 only: the 2_17 tag alone finds none. About 2.9 MB of wheels and 31 MB of
# data: both under the 64 MiB a call carries. Keras' other needs, absl-py, rich, h5py, ml-dtypes, numpy, packaging,
# and optree's typing-extensions are in the image already.)
# Then run it there with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".data"]).
#
# Smoke test on this CPU machine (no .whl/ here, so no install; python3 without keras falls back to .venv):
#   MAX_EPOCHS=1 TRAIN_ROWS=2000 KERAS_BACKEND=tensorflow bash benchmarks/gpu_check.sh /usr/share/datasets/fashion-mnist
set -euo pipefail

CALLER_DIR="$(pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-.data/fashion-mnist}"
case "$DATA" in /*) ;; *) if [ -d "$CALLER_DIR/$DATA" ]; then DATA="$CALLER_DIR/$DATA"; else DATA="$REPO/$DATA"; fi ;; esac
cd "$REPO"

export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
PYTHON="${PYTHON:-python3}"

# 1. the carried wheels (the device README's recipe)
if [ "${SKIP_WHEELS:-0}" != 1 ] && compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/*.whl into /tmp/site failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed into /tmp/site: $(cd .whl && ls *.whl | tr '\n' ' ')"
else
  echo "no wheels installed (no .whl/*.whl, or SKIP_WHEELS=1): using the keras that the interpreter has"
fi
if ! "$PYTHON" -c "import keras" > /dev/null 2>&1; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import keras" > /dev/null 2>&1; then
    echo "$PYTHON has no keras: using .venv/bin/python"
    PYTHON=.venv/bin/python
  else
    echo "gpu_check: $PYTHON cannot import keras; carry the wheels in .whl/ (see the top of this script)" >&2
    exit 1
  fi
fi
echo "python: $("$PYTHON" -c 'import sys, keras; print(sys.version.split()[0], "| keras", keras.__version__)') | KERAS_BACKEND=$KERAS_BACKEND"

# 2. the card
echo "--- nvidia-smi --query-gpu=name --format=csv"
nvidia-smi --query-gpu=name --format=csv 2> /dev/null || echo "(nvidia-smi not available: no NVIDIA GPU on this machine)"
echo "---"

# 3. packed vs sequential
REPORT_ARGS=()
if [ -n "${OUT:-}" ]; then REPORT_ARGS=(--report "$OUT/gpu_check.md"); fi
exec "$PYTHON" benchmarks/gpu_packed.py --data "$DATA" "${REPORT_ARGS[@]}"
