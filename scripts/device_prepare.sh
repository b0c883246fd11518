#!/usr/bin/env bash
# Here, before using the GPU machine: fill the carry folder that scripts/device_run.sh reads there.
#
#   bash scripts/device_prepare.sh                 # the data archives of the gpu profile
#   bash scripts/device_prepare.sh submitit==1.5.4 # + pure-Python wheels of packages its image lacks
#
# * $DEVICE_CARRY/data: the benchmark archives (DEVICE_DATASETS, default FB15k-237 and WN18RR)
#   copied from the data folder (KGC_DATA_DIR, else ../shared/data); the machine reaches no
#   network, so the library cannot download them there.
# * $DEVICE_CARRY/wheels: `pip download --no-deps --only-binary=:all:` for Python 3.12 on
#   x86-64 Linux of each package named. The machine's image already holds torch, numpy, pandas,
#   pyyaml and tqdm (all that training needs; /work/.library/device/KINDS.md lists the image);
#   name each dependency of a package too (--no-deps).
# The folder is ignored by git; name it in the device tool's `carry` (it counts towards 64 MiB).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CARRY="${DEVICE_CARRY:-.gpu-carry}"
DATASETS="${DEVICE_DATASETS:-FB15k-237.tar.gz WN18RR.tar.gz}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
DATA="${KGC_DATA_DIR:-$ROOT/../shared/data}"

mkdir -p "$CARRY/data" "$CARRY/wheels"
for archive in $DATASETS; do
  [ -f "$DATA/$archive" ] || { echo "device_prepare: $DATA/$archive not found; set KGC_DATA_DIR to the archives' folder" >&2; exit 1; }
  install -m 0644 "$DATA/$archive" "$CARRY/data/"
done
for package in "$@"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY/wheels" "$package"
done
size_kib="$(du -sk "$CARRY" | cut -f1)"
echo "device_prepare: $CARRY holds $(ls "$CARRY/data" | wc -l) archives and $(ls "$CARRY/wheels" | wc -l) wheels, ${size_kib} KiB"
if [ "$size_kib" -gt 49152 ]; then
  echo "device_prepare: over 48 MiB: with the checkout it may exceed the 64 MiB the device tool carries" >&2
fi
