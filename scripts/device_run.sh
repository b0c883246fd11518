#!/usr/bin/env bash
# The command run on the GPU machine, in a copy of this checkout: prepares that machine and runs
# one library command, then copies the run records it wrote to $OUT (what comes back).
#
#   bash scripts/device_run.sh scripts/train_runs.py --profile gpu --match metasd-FB15k-237 --stop-after-minutes 7
#   bash scripts/device_run.sh benchmarks/gpu_epoch.py
#   bash scripts/device_run.sh --unpack DIR      # here: put the records fetched into DIR back under results/
#
# The machine's own python3 holds torch (2.11, CUDA) but reaches no package registry, so:
# * the library runs from the checkout (PYTHONPATH=lib), nothing is installed;
# * wheels under $DEVICE_CARRY/wheels (scripts/device_prepare.sh downloads them here) are
#   installed into a scratch folder first; a module the command needs that is still missing
#   fails with a message naming the fix;
# * the data archives under $DEVICE_CARRY/data (device_prepare.sh copies them) are read there.
# Name the carry folder in the device tool's `carry` ([".gpu-carry"]).
#
# What comes back: at most 8 files of 16 MiB, so only record.json files (checkpoints stay on the
# machine: a run must finish while it is held; calls on the same warm machine resume each other)
# and the command's log. Records written by this call, found under $KGDISTILL_RECORDS (default
# results), are copied as $OUT/<path with / as -->; more than 7 go into one $OUT/records.tar.
# The command is stopped with SIGINT after $DEVICE_RUN_TIMEOUT seconds (default 570, inside the
# tool's 600); a stopped run resumes from its last checkpoint in the next call.
#
# Environment: PYTHON (default python3), OUT, DEVICE_CARRY (.gpu-carry), KGDISTILL_RECORDS
# (results), DEVICE_RUN_TIMEOUT (570), DEVICE_RUN_MODULES (modules checked before the command),
# DEVICE_RUN_ALL_RECORDS=1 (copy every record found, not only this call's).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
CARRY="${DEVICE_CARRY:-.gpu-carry}"
case "$CARRY" in /*) ;; *) CARRY="$ROOT/$CARRY" ;; esac
RECORDS="${KGDISTILL_RECORDS:-results}"
LIMIT="${DEVICE_RUN_TIMEOUT:-570}"
MODULES="${DEVICE_RUN_MODULES:-torch numpy pandas yaml tqdm}"

say() { echo "device_run: $*" >&2; }

if [ "${1:-}" = "--unpack" ]; then  # here: fetched files -> $RECORDS/<profile>/runs/<run>/record.json
  src="${2:?usage: scripts/device_run.sh --unpack DIR}"
  mkdir -p "$RECORDS"
  n=0
  for f in "$src"/*.json; do
    [ -e "$f" ] || continue
    rel="$(basename "$f" | sed 's/--/\//g')"
    mkdir -p "$RECORDS/$(dirname "$rel")" && cp "$f" "$RECORDS/$rel" && n=$((n + 1))
  done
  if [ -f "$src/records.tar" ]; then
    n=$((n + $(tar -tf "$src/records.tar" | grep -c 'record\.json$')))
    tar -xf "$src/records.tar" -C "$RECORDS" || exit 1
  fi
  echo "device_run: $n records unpacked under $RECORDS"
  exit 0
fi

[ $# -gt 0 ] || { say "usage: bash scripts/device_run.sh SCRIPT [ARGS...]  (or --unpack DIR)"; exit 2; }
[ -n "${OUT:-}" ] || { say "OUT is not set: it names the folder whose files come back (the device tool sets it)"; exit 2; }
mkdir -p "$OUT"

# 1. carried wheels, then the modules the library needs
extra=""
if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
  extra="${TMPDIR:-/tmp}/kgdistill-site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$extra" \
    "$CARRY"/wheels/*.whl || { say "installing the wheels of $CARRY/wheels failed"; exit 3; }
fi
export PYTHONPATH="$ROOT/lib${extra:+:$extra}${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2086
missing="$("$PY" -c 'import importlib.util, sys; print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' $MODULES)" \
  || { say "$PY does not run"; exit 3; }
if [ -n "$missing" ]; then
  say "$PY lacks the module(s): $missing. Here, run 'bash scripts/device_prepare.sh <package>...' (pip names," \
      "e.g. pyyaml for yaml) and name $CARRY in the device tool's carry."
  exit 3
fi
if [ -d "$CARRY/data" ]; then
  export KGC_DATA_DIR="$CARRY/data"
elif [ -z "${KGC_DATA_DIR:-}" ] && [ ! -d "$ROOT/../shared/data" ]; then
  say "no data archives carried ($CARRY/data) and no KGC_DATA_DIR: the machine cannot download them;" \
      "run 'bash scripts/device_prepare.sh' here and name $CARRY in the device tool's carry"
fi

# 2. the command
stamp="$(mktemp)"
export PYTHONUNBUFFERED=1
"$PY" -c 'import torch; print("device_run: torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tee "$OUT/device_run.log"
timeout --signal=INT --kill-after=30 "$LIMIT" "$PY" "$@" 2>&1 | tee -a "$OUT/device_run.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && say "stopped after $LIMIT s; the run resumes from its last checkpoint in the next call"

# 3. the records this call wrote
records=()
if [ -d "$RECORDS" ]; then
  newer=(-newer "$stamp")
  [ "${DEVICE_RUN_ALL_RECORDS:-0}" = 1 ] && newer=()
  while IFS= read -r -d '' f; do records+=("${f#"$RECORDS"/}"); done \
    < <(find "$RECORDS" -name record.json "${newer[@]}" -print0 | sort -z)
fi
rm -f "$stamp"
if [ "${#records[@]}" -gt 7 ]; then
  tar -cf "$OUT/records.tar" -C "$RECORDS" "${records[@]}" && say "${#records[@]} records in records.tar"
else
  for rel in "${records[@]}"; do cp "$RECORDS/$rel" "$OUT/${rel//\//--}"; done
  say "${#records[@]} records copied to $OUT"
fi
exit "$status"
