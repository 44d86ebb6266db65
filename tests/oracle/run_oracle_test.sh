#!/usr/bin/env bash
# Compares `mailvault search` with the independent Python oracle (oracle.py) on a Maildir.
#
#   run_oracle_test.sh MAILVAULT_BIN [MAILDIR [QUERIES.jsonl]]
#
# MAILDIR defaults to $MAILVAULT_CORPUS (set by scripts/test.sh).
# Makes a temporary vault, imports MAILDIR, runs every query of QUERIES.jsonl (default: the
# queries.jsonl next to this script) with `search --json --limit 0`, and compares the set of ids
# with the oracle's. Prints PASS/FAIL per query (for a FAIL: up to 5 missing and 5 extra ids with
# their file names and the oracle's notes on them). Exit status: 0 if every query passed, 1 if any
# failed, 2 on a usage or setup error. KEEP_TMP=1 keeps the temporary directory. ORACLE_VARIANTS=0
# skips the oracle's alternative readings (faster; a FAIL then does not say whether mailvault's
# answer is the one of another plausible reading of the spec).
set -uo pipefail

if [[ $# -lt 1 || $# -gt 3 || ( $# -lt 2 && -z "${MAILVAULT_CORPUS:-}" ) ]]; then
  echo "usage: $0 MAILVAULT_BIN [MAILDIR [QUERIES.jsonl]] (MAILDIR defaults to \$MAILVAULT_CORPUS)" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ "$1" == */* ]]; then MV=$(realpath "$1"); else MV=$(command -v "$1" || echo "$1"); fi
MAILDIR=$(realpath "${2:-$MAILVAULT_CORPUS}")
QUERIES=$(realpath "${3:-$HERE/queries.jsonl}")
[[ -x "$MV" ]] || { echo "not executable: $MV" >&2; exit 2; }
[[ -d "$MAILDIR" ]] || { echo "not a directory: $MAILDIR" >&2; exit 2; }

T=$(mktemp -d "${TMPDIR:-/tmp}/mv-oracle.XXXXXX")
if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "temporary directory: $T"; else trap 'rm -rf "$T"' EXIT; fi
mv_() { "$MV" --vault "$T/vault" --key-file "$T/key" "$@"; }

# The oracle reads the raw files while mailvault imports them.
VARIANT_ARGS=(--variants "$T/variants.json")
[[ "${ORACLE_VARIANTS:-1}" == 0 ]] && VARIANT_ARGS=()
python3 "$HERE/oracle.py" --details "$T/details.json" "${VARIANT_ARGS[@]}" \
  "$MAILDIR" "$QUERIES" >"$T/oracle.json" 2>"$T/oracle.err" &
ORACLE_PID=$!

if ! mv_ init >"$T/init.out" 2>&1; then
  echo "mailvault init failed:" >&2; cat "$T/init.out" >&2; kill "$ORACLE_PID" 2>/dev/null; exit 2
fi
start=$(date +%s)
mv_ import "$MAILDIR" >"$T/import.out" 2>&1
rc=$?
echo "import: exit $rc in $(( $(date +%s) - start ))s: $(tail -n 1 "$T/import.out")"
if [[ $rc -ne 0 && $rc -ne 3 ]]; then   # 3 = something was rejected (reported below)
  echo "mailvault import failed:" >&2; tail -n 20 "$T/import.out" >&2; kill "$ORACLE_PID" 2>/dev/null; exit 2
fi

if ! wait "$ORACLE_PID"; then
  echo "oracle.py failed:" >&2; cat "$T/oracle.err" >&2; exit 2
fi

# One search per query; the queries are read back from the file by python (one per line, NUL-free).
mkdir -p "$T/out"
mapfile -t QS < <(python3 -c '
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.strip()
    if line and not line.startswith("#"):
        print(json.loads(line)["q"])
' "$QUERIES")
start=$(date +%s)
for i in "${!QS[@]}"; do
  mv_ search --json --limit 0 -- "${QS[$i]}" >"$T/out/$i.json" 2>"$T/out/$i.err"
  echo $? >"$T/out/$i.rc"
done
echo "searches: ${#QS[@]} queries in $(( $(date +%s) - start ))s"

python3 "$HERE/compare.py" "$T" "$QUERIES" "$MAILDIR"
