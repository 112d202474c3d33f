#!/usr/bin/env bash
# Build the device kit: what a GPU trial and the fan-out's driver import that the GPU machine's image lacks, plus the
# data, in one folder that travels with one call (design section 9, issue 19 section 1).
#
#   bash benchmarks/device_kit.sh            # builds build/device-kit/ (ignored: build/ is in .gitignore)
#
# The image (Python 3.12, JAX 0.11.2 with CUDA, numpy, pandas, pyarrow, rich, PyYAML, msgpack, protobuf, aiohttp,
# requests, click, attrs, absl-py, h5py, ml-dtypes, packaging, typing-extensions, filelock, fsspec, matplotlib, ...)
# has no Ray, Keras, pydantic, boto3, Prefect, optuna or TensorFlow. The kit carries, for cp312 manylinux x86_64, at
# the versions requirements.lock pins:
#   ray-<v>-cp312-trimmed.tar.xz  Ray's wheel unpacked (site-packages layout) without ray/jars (Java), ray/rllib,
#                                 ray/llm and ray/dashboard/client (the web UI's static files: trials start Ray with
#                                 include_dashboard=False), its binaries and extensions stripped of symbol tables,
#                                 tar + xz -6;
#   wheels/                       keras, namex, optree (Keras on JAX); pydantic, pydantic-core, annotated-types,
#                                 typing-inspection (TrialSpec and Recipe are pydantic models); pydantic-settings,
#                                 python-dotenv (tasks.settings, read by the fan-out's driver); jsonschema,
#                                 jsonschema-specifications, referencing, rpds-py (Ray's own requirement);
#   fashion-mnist.tar.xz          the four raw IDX files (tasks.data.dataset reads them uncompressed too);
#   MANIFEST.txt                  every file's size and sha256.
# Not carried: TensorFlow (KERAS_BACKEND=jax there), optuna (searches only: tasks.tune.ray_compat checks it only
# where it is installed), boto3 and Prefect (the GPU call uses a folder store and no flow), tensorboardX (optional
# for Tune).
#
# It prints the kit's size and exits 1 when the kit exceeds KIT_LIMIT_MIB (60): a call carries 64 MiB in all,
# the repository's tracked files included. Downloads are cached in build/device-kit-cache/; the trimmed Ray and the
# data archive are rebuilt only when missing (FORCE=1 rebuilds everything).
# Knobs: KIT (build/device-kit), KIT_LIMIT_MIB (60), PYTHON (.venv/bin/python: any pip downloads for cp312),
#        FASHION_MNIST_DIR (/usr/share/datasets/fashion-mnist), XZ_THREADS (2).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
KIT="${KIT:-$REPO/build/device-kit}"
CACHE="$REPO/build/device-kit-cache"
LIMIT_MIB="${KIT_LIMIT_MIB:-60}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
DATA_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
XZ_THREADS="${XZ_THREADS:-2}"

# The kit's packages (besides Ray), by their names in requirements.lock.
PACKAGES=(keras namex optree pydantic pydantic-core annotated-types typing-inspection pydantic-settings python-dotenv
          jsonschema jsonschema-specifications referencing rpds-py)

pinned() {  # name==version as requirements.lock pins it (names compared as pip normalises them)
  local want; want="$(echo "$1" | tr 'A-Z_.' 'a-z--')"
  awk -F'==' -v want="$want" '{n=tolower($1); gsub(/[_.]/, "-", n)} n == want {print $1 "==" $2; exit}' requirements.lock
}

for tool in xz strip unzip tar; do
  command -v "$tool" > /dev/null || { echo "device_kit: '$tool' is needed (apt-get install xz-utils binutils unzip)" >&2; exit 1; }
done
for name in "${PACKAGES[@]}" ray; do
  [ -n "$(pinned "$name")" ] || { echo "device_kit: requirements.lock pins no version of $name" >&2; exit 1; }
done

[ "${FORCE:-0}" = 1 ] && rm -rf "$KIT" "$CACHE"
mkdir -p "$CACHE" "$KIT/wheels"
started=$SECONDS

# 1. the wheels, for the device's interpreter and platform
specs=(); for name in "${PACKAGES[@]}" ray; do specs+=("$(pinned "$name")"); done
echo "device_kit: downloading ${specs[*]} (cp312, manylinux x86_64) into $CACHE"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CACHE" "${specs[@]}"

rm -f "$KIT"/wheels/*.whl
for name in "${PACKAGES[@]}"; do
  spec="$(pinned "$name")"; file_name="$(echo "${spec%%==*}" | tr 'A-Z.-' 'a-z__')-${spec##*==}-"
  matches=("$CACHE"/"$file_name"*.whl)
  [ -f "${matches[0]}" ] || { echo "device_kit: no wheel $file_name*.whl in $CACHE" >&2; exit 1; }
  cp "${matches[0]}" "$KIT/wheels/"
done

# 2. Ray, trimmed and compressed
ray_version="$(pinned ray)"; ray_version="${ray_version##*==}"
ray_archive="$KIT/ray-$ray_version-cp312-trimmed.tar.xz"
if [ ! -s "$ray_archive" ]; then
  ray_wheel=("$CACHE"/ray-"$ray_version"-cp312-*.whl)
  stage="$CACHE/ray-stage"
  rm -rf "$stage" && mkdir -p "$stage"
  unzip -q "${ray_wheel[0]}" -d "$stage"
  before=$(du -sm "$stage" | cut -f1)
  rm -rf "$stage/ray/jars" "$stage/ray/rllib" "$stage/ray/llm" "$stage/ray/dashboard/client"
  find "$stage/ray" \( -name '*.so' -o -path '*/core/src/ray/gcs/gcs_server' -o -path '*/core/src/ray/raylet/raylet' \) \
    -type f -exec strip --strip-unneeded {} +
  echo "device_kit: Ray unpacked ${before} MB, trimmed and stripped $(du -sm "$stage" | cut -f1) MB; compressing (xz -6)"
  tar -C "$stage" -cf - . | xz -6 -T"$XZ_THREADS" > "$ray_archive.part"
  mv "$ray_archive.part" "$ray_archive"
  rm -rf "$stage"
fi

# 3. the data: the four raw IDX files, decompressed, then xz (smaller than their .gz)
data_archive="$KIT/fashion-mnist.tar.xz"
if [ ! -s "$data_archive" ]; then
  stage="$CACHE/data-stage"
  rm -rf "$stage" && mkdir -p "$stage/fashion-mnist"
  for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$DATA_DIR/$name.gz" ]; then gzip -dc "$DATA_DIR/$name.gz" > "$stage/fashion-mnist/$name"
    elif [ -f "$DATA_DIR/$name" ]; then cp "$DATA_DIR/$name" "$stage/fashion-mnist/"
    else echo "device_kit: $DATA_DIR has no $name(.gz) (apt-get install dataset-fashion-mnist)" >&2; exit 1; fi
  done
  tar -C "$stage" -cf - fashion-mnist | xz -6 -T"$XZ_THREADS" > "$data_archive.part"
  mv "$data_archive.part" "$data_archive"
  rm -rf "$stage"
fi

# 4. manifest, size, limit
(cd "$KIT" && find . -type f ! -name MANIFEST.txt | sort | while read -r f; do
   printf '%s  %10d  %s\n' "$(sha256sum "$f" | cut -c1-64)" "$(stat -c %s "$f")" "${f#./}"; done) > "$KIT/MANIFEST.txt"
bytes=$(find "$KIT" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
cat "$KIT/MANIFEST.txt"
echo "device_kit: $KIT holds $bytes bytes = $mib MiB (limit $LIMIT_MIB MiB), built in $((SECONDS - started)) s"
if awk -v b="$bytes" -v l="$LIMIT_MIB" 'BEGIN {exit !(b > l * 1048576)}'; then
  echo "device_kit: the kit is $mib MiB, over the $LIMIT_MIB MiB limit (a call carries 64 MiB in all): trim more" >&2
  exit 1
fi
