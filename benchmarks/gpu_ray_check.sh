#!/usr/bin/env bash
# The one prepared call for the lent GPU machine (issue 19 section 2): the kit unpacked, then the fan-out through
# Ray on the GPU, stage by stage, each under its own time limit and all under TOTAL_LIMIT (560 s), a line per stage,
# results under $OUT. Build the kit here first (bash benchmarks/device_kit.sh), then, through the device tool:
#
#   run(command="bash benchmarks/gpu_ray_check.sh", carry=["build/device-kit"], timeout_s=600)
#
# Stages (STAGES picks and orders them; default all, in this order):
#   unpack   the kit into $SITE (Ray's trimmed tar.xz, the wheels with pip --target) and the data into $WORK/data
#   prepare  the dataset published once into a folder store ($WORK/store), as `fmnist prepare` does
#   five     the five report models, seed protocol, all rows, packed on one GPU through the project's Ray Tune
#            fan-out (gpus_per_trial 0.2), per-epoch checkpoints: each trial's GPU id, peak memory, s/epoch, epochs,
#            test accuracy; the wall from the first trial's start to the last one's end
#   sixth    resnet_bn with its 40-epoch recipe (benchmarks/results/search_winners_recipes.json), SEEDS (3) seeds packed
#   restart  mlp1 alone; its trial process SIGKILLed after epoch KILL_AFTER (2); Tune restarts it from the checkpoint
#   winners  the five searched winners' recipes, SEEDS seeds each, all packed on the GPU
#   plain    benchmarks/plain_five.py: the plain sequential Keras script on the same GPU, for the ratio
# Results: $OUT/gpu_ray_check.log (everything printed), gpu_ray_check.md (tables), gpu_ray_check.json (all figures),
# nvidia_smi.csv (memory and utilisation every 0.5 s). A stage that fails or runs out of time is recorded and the
# next one runs.
#
# Smoke profile, SMOKE=1: 2,000 rows, 1 epoch, 1 seed, on whatever CPU; benchmarks/device_sim.sh runs it in a Python
# 3.12 venv holding only the GPU image's packages plus the kit (KERAS_BACKEND=jax). SKIP_KIT=1 skips the unpack and
# uses the interpreter's own packages (e.g. PYTHON=.venv/bin/python, FASHION_MNIST_DIR for the data).
# Knobs: KIT (build/device-kit), SITE (/tmp/fmnist-site), WORK (/tmp/gpu-ray-check), OUT, PYTHON (python3),
# KERAS_BACKEND (jax), TOTAL_LIMIT (560), LIMIT_<stage> (seconds), PLAIN_MAX_EPOCHS (100; SMOKE 1), and the
# overrides gpu_ray_check.py reads (TRAIN_ROWS, TEST_ROWS, MAX_EPOCHS, SEEDS, GPUS_PER_TRIAL, KILL_AFTER).
set -uo pipefail  # no -e: a failed stage is recorded and the call goes on

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
call_started=$SECONDS
KIT="${KIT:-build/device-kit}"; case "$KIT" in /*) ;; *) KIT="$REPO/$KIT" ;; esac
SITE="${SITE:-/tmp/fmnist-site}"
export WORK="${WORK:-/tmp/gpu-ray-check}" SMOKE="${SMOKE:-0}"
export OUT="${OUT:-$REPO/build/gpu-ray-check-out}"
PYTHON="${PYTHON:-python3}"
STAGES="${STAGES:-unpack prepare five sixth restart winners plain}"
TOTAL_LIMIT="${TOTAL_LIMIT:-560}"
export KERAS_BACKEND="${KERAS_BACKEND:-jax}" XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" RAY_AIR_NEW_OUTPUT=0
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT" "$WORK/results"
rm -f "$WORK"/results/*.json
exec > >(tee -a "$OUT/gpu_ray_check.log") 2>&1

declare -A LIMIT=([unpack]=60 [prepare]=45 [five]=110 [sixth]=170 [restart]=50 [winners]=90 [plain]=60)
[ "$SMOKE" = 1 ] && LIMIT=([unpack]=120 [prepare]=90 [five]=240 [sixth]=240 [restart]=180 [winners]=240 [plain]=300)

say() { printf '[%5ds] %s\n' $((SECONDS - call_started)) "$*"; }
limit_of() {  # the stage's own limit, never past the call's
  local own="${1}" var="LIMIT_$2" left=$((TOTAL_LIMIT - (SECONDS - call_started) - 10))
  own="${!var:-$own}"
  [ "$left" -lt "$own" ] && own=$left
  echo $(( own < 1 ? 1 : own ))
}
record() {  # a stage's result when the stage itself wrote none (shell stages, or killed before writing)
  [ -f "$WORK/results/$1.json" ] || printf '{"ok": %s, "wall_s": %s, "exit": %s%s}\n' "$2" "$3" "$4" "${5:-}" > "$WORK/results/$1.json"
}

failed_stages=()
say "gpu_ray_check: stages [$STAGES], SMOKE=$SMOKE, KERAS_BACKEND=$KERAS_BACKEND, limit ${TOTAL_LIMIT} s"
GPUS=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
  GPUS=$(nvidia-smi -L | grep -c '^GPU')
  export GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 500 > "$OUT/nvidia_smi.csv" 2>&1 &
  SAMPLER=$!
  trap 'kill $SAMPLER 2> /dev/null' EXIT
else
  say "no NVIDIA GPU here: the trials run on the CPU"
fi
[ "$SMOKE" = 1 ] && GPUS=0
export GPUS

for stage in $STAGES; do
  limit=$(limit_of "${LIMIT[$stage]:-120}" "$stage")
  say "--- $stage (limit ${limit} s)"
  started=$SECONDS
  case "$stage" in
    unpack)
      if [ "${SKIP_KIT:-0}" = 1 ]; then
        say "unpack: skipped (SKIP_KIT=1): $PYTHON's own packages"
        export DATA="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
        record unpack true 0 0 ', "skipped": true'
        continue
      fi
      timeout -k 5 "$limit" bash -c '
        set -euo pipefail
        mkdir -p "$2" "$3/data"
        tar -xJf "$1"/ray-*-trimmed.tar.xz -C "$2"
        "$4" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/wheels/*.whl
        tar -xJf "$1/fashion-mnist.tar.xz" -C "$3/data"' _ "$KIT" "$SITE" "$WORK" "$PYTHON"
      rc=$?
      export PYTHONPATH="$SITE:$PYTHONPATH" DATA="$WORK/data/fashion-mnist"
      "$PYTHON" -c 'import sys, ray, keras, pydantic; print("python", sys.version.split()[0], "| ray", ray.__version__, "| keras", keras.__version__, keras.backend.backend(), "| pydantic", pydantic.VERSION)' || rc=1
      record unpack "$([ $rc = 0 ] && echo true || echo false)" $((SECONDS - started)) $rc \
        ", \"kit_bytes\": $(find "$KIT" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
      ;;
    plain)
      # plain_five.py reads the four .gz files, whole: SMOKE cuts them to its rows (the header's count is not read)
      rm -rf "$WORK/data-gz" && mkdir -p "$WORK/data-gz"
      for f in "$DATA"/*-ubyte; do
        name=$(basename "$f"); rows=$([[ $name == t10k* ]] && echo "${TEST_ROWS:-500}" || echo "${TRAIN_ROWS:-2000}")
        case "$SMOKE:$name" in
          1:*images*) head -c $((16 + rows * 784)) "$f" | gzip -1 > "$WORK/data-gz/$name.gz" ;;
          1:*labels*) head -c $((8 + rows)) "$f" | gzip -1 > "$WORK/data-gz/$name.gz" ;;
          *) gzip -1 -c "$f" > "$WORK/data-gz/$name.gz" ;;
        esac
      done
      epochs="${PLAIN_MAX_EPOCHS:-$([ "$SMOKE" = 1 ] && echo 1 || echo 100)}"
      timeout -k 10 -s INT "$limit" "$PYTHON" benchmarks/plain_five.py --max-epochs "$epochs" --folder "$WORK/data-gz" \
        | tee "$WORK/plain.jsonl"
      rc=$?
      "$PYTHON" - "$WORK/plain.jsonl" "$WORK/results/plain.json" $((SECONDS - started)) $rc << 'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
models = [r for r in rows if "architecture" in r]
total = next((r["total_seconds"] for r in rows if "total_seconds" in r), None)
json.dump({"ok": sys.argv[4] == "0", "wall_s": float(sys.argv[3]), "exit": int(sys.argv[4]), "models": models,
           "total_seconds": total, "finished_models": len(models)}, open(sys.argv[2], "w"))
EOF
      ;;
    *)
      timeout -k 15 -s INT "$limit" "$PYTHON" benchmarks/gpu_ray_check.py "$stage"
      rc=$?
      record "$stage" false $((SECONDS - started)) $rc
      ;;
  esac
  say "$stage: exit $rc after $((SECONDS - started)) s$([ $rc = 124 ] && echo ' (its time limit)')"
  [ "$rc" = 0 ] || failed_stages+=("$stage")
done

say "--- summary"
"$PYTHON" benchmarks/gpu_ray_check.py summary || failed_stages+=(summary)
say "gpu_ray_check: done in $((SECONDS - call_started)) s; results in $OUT; failed: ${failed_stages[*]:-none}"
[ ${#failed_stages[@]} = 0 ]
