#!/usr/bin/env bash
# End-to-end test of the full-text index through the `mailvault` command on the real corpus:
# search, count, index status/run, check, reindex, query errors, and crash safety: `index run`
# killed with SIGKILL at random moments must leave an index that the next run completes, with
# `check` clean and every answer equal to a fresh reindex's.
#   index_cli_test.sh PATH_TO_MAILVAULT    (needs MAILVAULT_CORPUS, the corpus Maildir)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MV=$1
: "${MAILVAULT_CORPUS:?set MAILVAULT_CORPUS to the corpus Maildir (scripts/test.sh does)}"
cli_setup  # $T, removed at exit; mv ARGS... on the vault $T/v; fail (lib.sh) stops the test
total=$(ls "$MAILVAULT_CORPUS/cur" | wc -l)

for c in search count index reindex check; do "$MV" "$c" --help >/dev/null || fail "$c --help"; done

mv init >/dev/null
# Store without indexing: the index then lags by every message.
mv import -q --no-index "$MAILVAULT_CORPUS" >/dev/null
mv index status --json > "$T/status.json"
python3 - "$T/status.json" "$total" <<'PY' || fail "index status before indexing: $(cat "$T/status.json")"
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
assert s["vault_changes"] == n and s["indexed_changes"] == 0 and s["lag"] == n, s
assert len(s["oldest_unindexed"]["id"]) == 64, s
PY
out=$(mv check 2>&1) && fail "check passed on an index that lags: $out"
grep -q "not indexed: " <<<"$out" || fail "check did not list the missing messages"

# Kill the indexer at random moments; every run picks up where the last commit left it.
for i in 1 2 3 4 5; do
  # The binary itself, not the mv() function: $! must be mailvault's own pid.
  "$MV" --vault "$T/v" --key-file "$T/k" index run -q >/dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
mv index status --json > "$T/status.json"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["indexed_changes"] <= s["vault_changes"], s' "$T/status.json" ||
  fail "status after kills: $(cat "$T/status.json")"
mv index run -q > "$T/run.out" || fail "index run after kills"
mv check > "$T/check.out" || fail "check after kills: $(tail -3 "$T/check.out")"
grep -q "^ok: $total messages in the vault, $total in the index" "$T/check.out" || fail "check: $(cat "$T/check.out")"
[ "$(mv count '*')" = "$total" ] || fail "count * after kills"

queries=('from:tomwhore@slack.net' 'subject:"new sequences window"' 'body:"open source" -has:attachment'
         'date:2002-08-01..2002-08-31 size:..2K' 'mime:text/html OR attachment:jpg' 'refinanc*')
for q in "${queries[@]}"; do mv search --json --limit 0 "$q" | python3 -c 'import json,sys; print(sorted(r["id"] for r in json.load(sys.stdin)["results"]))'; done > "$T/after-kills.txt"
mv reindex -q >/dev/null || fail "reindex"
for q in "${queries[@]}"; do mv search --json --limit 0 "$q" | python3 -c 'import json,sys; print(sorted(r["id"] for r in json.load(sys.stdin)["results"]))'; done > "$T/fresh.txt"
cmp -s "$T/after-kills.txt" "$T/fresh.txt" || fail "answers after the kills differ from a fresh reindex"
mv check >/dev/null || fail "check after reindex"

# Counts are exact and agree between count, search's total and the number of results.
n=$(mv count 'subject:razor')
[ "$n" -gt 100 ] || fail "count subject:razor = $n"
t=$(mv search --json --limit 5 'subject:razor' | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["total"], len(d["results"]))')
[ "$t" = "$n 5" ] || fail "total/results: $t, count $n"
# Paging walks the whole set without repeats.
a=$(mv search --json --limit 100 --offset 0 'subject:razor' | python3 -c 'import json,sys; print(" ".join(r["id"] for r in json.load(sys.stdin)["results"]))')
b=$(mv search --json --limit 0 --offset 100 'subject:razor' | python3 -c 'import json,sys; print(" ".join(r["id"] for r in json.load(sys.stdin)["results"]))')
[ "$(echo $a $b | tr ' ' '\n' | sort -u | wc -l)" = "$n" ] || fail "paging"
# Sorted newest first by default, oldest first on request.
mv search --json --limit 0 'subject:razor' | python3 -c '
import json,sys; d=[r["date"] for r in json.load(sys.stdin)["results"]]
from datetime import datetime
ts=[datetime.fromisoformat(x).timestamp() for x in d]; assert ts == sorted(ts, reverse=True)' || fail "date order"
mv search --sort relevance 'razor' >/dev/null || fail "relevance sort"

# Query errors name the position; the exit status says failure.
set +e
out=$(mv search '(razor OR spam' 2>&1); rc=$?
set -e
[ "$rc" = 2 ] || fail "bad query exit status $rc (2: bad usage)"
grep -q 'query error at 15: ")" expected to close the "(" at 1' <<<"$out" || fail "bad query message: $out"
out=$(mv count 'frm:x' 2>&1) && fail "unknown field accepted"
grep -q 'unknown field "frm"' <<<"$out" || fail "unknown field message: $out"

# An index deleted outright is rebuilt from the vault; a missing index is named, not a crash.
rm -rf "$T/v/index"
out=$(mv search razor 2>&1) && fail "search without an index succeeded"
grep -q "no full-text index" <<<"$out" || fail "missing index message: $out"
mv index run -q >/dev/null
[ "$(mv count '*')" = "$total" ] || fail "count after rebuilding a deleted index"
echo "index CLI test passed"
