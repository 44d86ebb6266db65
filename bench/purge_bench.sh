#!/usr/bin/env bash
# Purge benchmark (issue 15), two parts on the same machine in the same run:
# 1. Purge rate against import rate. A vault of N messages (default 60,000, made from the
#    SpamAssassin corpus by bench/make_scale_corpus.py in 10 batches, each with its own
#    custodian; the generated mail is dated 2019-2023) is imported with `mailvault import`
#    (import rate = N / its wall time). A retention of 365 days from the Date header over
#    everything and a hold on one custodian's mail make 90% purgeable; serve runs with the API,
#    one compliance officer proposes (POST /api/v1/purges), another approves, and the purge rate
#    is purged messages / wall time from the approval to state done (deciding again, disposition
#    records, tags and exports, the index's deletes and compaction, every pack rewritten and the
#    dictionary retrained). Target: purge rate >= import rate.
# 2. Capture with and without policies. `serve --smtp` on a fresh vault driven by Postfix's
#    smtp-source (-s SESSIONS -l 5120 -m M), once with no policy set and once with a set of
#    retentions, holds and three tag policies in force (one tags every captured message; tags
#    are applied behind the indexer, below capture's priority). R runs each, alternating which
#    goes first; the target compares the medians (single runs vary by +-10% on this machine).
#    Target: with policies >= 0.95 x without.
#
# usage: bench/purge_bench.sh [--messages N] [--capture M] [--runs R] [--sessions S] [--keep]
#   defaults: N 60000, M 20000, R 5, S 20
# Environment: MAILVAULT_BIN (default <repo>/build/release/cli/mailvault), MAILVAULT_CORPUS
# (default ~/.cache/mailvault/corpus/maildir), TMPDIR (needs about N x 15 KB). Needs curl and
# smtp-source (the Debian package postfix; no Postfix instance is started).
set -euo pipefail
bench_name=purge_bench
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$script_dir/lib.sh"
# shellcheck source=../tests/capture/servers.sh
source "$script_dir/../tests/capture/servers.sh"
n=60000 m=20000 runs=5 sessions=20 keep=0
while (($#)); do
  case $1 in
    --messages) n=$2; shift 2 ;;
    --capture) m=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
mv_bin=${MAILVAULT_BIN:-$script_dir/../build/release/cli/mailvault}
[[ -x $mv_bin ]] || die "no mailvault binary at $mv_bin (scripts/build.sh release)"
maildir=${MAILVAULT_CORPUS:-$HOME/.cache/mailvault/corpus/maildir}
[[ -d $maildir/cur ]] || die "no corpus at $maildir (scripts/fetch-corpus.sh)"
command -v curl >/dev/null || die "curl is missing"
command -v smtp-source >/dev/null || die "smtp-source is missing (apt-get install postfix)"
bench_scratch mv-purge-bench
serve_pid=""
stop_serve() {
  [[ -n $serve_pid ]] || return 0
  kill -TERM "$serve_pid" 2>/dev/null
  wait "$serve_pid" 2>/dev/null || true
  serve_pid=""
}
trap 'stop_serve; bench_cleanup' EXIT

# ---- 1. purge against import ----
V=$work/vault K=$work/key
mv() { "$mv_bin" --vault "$V" --key-file "$K" "$@"; }
log "generating $n messages in 10 batches"
python3 "$script_dir/make_scale_corpus.py" --batches 10 "$maildir" "$work/corpus" "$n" 2>"$work/gen.log" || die "make_scale_corpus.py failed"
mv init >/dev/null
t0=$EPOCHREALTIME
for b in "$work"/corpus/batch-*; do
  mv import -q --custodian "user${b##*-}@corp.example" "$b" >>"$work/import.log" 2>&1 || die "import of $b failed"
done
import_s=$(since "$t0")
stored=$(json_get <(mv stats --json) messages)
import_rate=$(calc '%.0f' "$stored / $import_s")
log "imported $stored messages in $import_s s ($import_rate msg/s)"
mv index run -q >/dev/null 2>&1
cat >"$work/policies.json" <<'JSON'
[
  {"name": "everything-365d", "kind": "retention", "keep": "365d", "from": "date"},
  {"name": "hold-user03", "kind": "hold", "case": "bench", "custodians": ["user03@corp.example"]}
]
JSON
mv policy set "$work/policies.json" >/dev/null
purgeable=$(json_get <(mv policy what-if "$work/policies.json" --json) purgeable)
for u in c1 c2; do echo "$u-bench-secret-1" | mv user add "$u" --role compliance >/dev/null; done
packs_before=$(du_b "$V/packs") vault_before=$(du_b "$V")
hp=$(free_port)
"$mv_bin" --vault "$V" --key-file "$K" serve --http "127.0.0.1:$hp" 2>>"$work/serve.log" &
serve_pid=$!
wait_port "$hp" 60 || die "serve did not start (see $work/serve.log)"
base=http://127.0.0.1:$hp
token() {
  curl -s -H 'Content-Type: application/json' -X POST --data "{\"username\":\"$1\",\"password\":\"$1-bench-secret-1\"}" \
    "$base/api/v1/auth/login" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
t1=$(token c1) t2=$(token c2)
pid=$(curl -s -X POST -H "Authorization: Bearer $t1" "$base/api/v1/purges" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
t0=$EPOCHREALTIME
curl -s -o /dev/null -X POST -H "Authorization: Bearer $t2" "$base/api/v1/purges/$pid/approve"
while :; do
  curl -s -H "Authorization: Bearer $t1" "$base/api/v1/purges/$pid" >"$work/purge.json"
  state=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("state", ""))' "$work/purge.json")
  [[ $state == done || $state == failed ]] && break
  sleep 0.2
done
purge_s=$(since "$t0")
[[ $state == done ]] || die "the purge ended $state: $(cat "$work/purge.json")"
purged=$(json_get "$work/purge.json" purged)
stop_serve
purge_rate=$(calc '%.0f' "$purged / $purge_s")
packs_after=$(du_b "$V/packs") vault_after=$(du_b "$V")
log "purged $purged of $stored messages (what-if: $purgeable) in $purge_s s ($purge_rate msg/s)"

# ---- 2. capture with and without policies ----
capture_run() {   # capture_run WITH_POLICIES RUN: the rate in c_rate
  local cv=$work/cap-$1-$2 port t0 s
  "$mv_bin" --vault "$cv" --key-file "$cv.key" init >/dev/null
  if [[ $1 == with ]]; then
    cat >"$work/cap-policies.json" <<'JSON'
[
  {"name": "default-7y", "kind": "retention", "keep": "7y"},
  {"name": "short-1y", "kind": "retention", "query": "subject:(re OR fwd)", "keep": "1y", "weight": 2},
  {"name": "hold-sender", "kind": "hold", "case": "b-1", "query": "from:example.test"},
  {"name": "tag-a", "kind": "tag", "tag": "a", "query": "subject:smtp"},
  {"name": "tag-b", "kind": "tag", "tag": "b", "query": "from:example.test"},
  {"name": "tag-c", "kind": "tag", "tag": "c", "custodians": ["archive@journal.test"]}
]
JSON
    "$mv_bin" --vault "$cv" --key-file "$cv.key" policy set "$work/cap-policies.json" >/dev/null
  fi
  port=$(free_port)
  "$mv_bin" --vault "$cv" --key-file "$cv.key" serve --smtp "127.0.0.1:$port" 2>>"$work/cap-serve.log" &
  serve_pid=$!
  wait_port "$port" 30 || die "serve --smtp did not start"
  t0=$EPOCHREALTIME
  smtp-source -d -s "$sessions" -l 5120 -m "$m" -f sender@example.test -t archive@journal.test "127.0.0.1:$port" \
    >"$work/smtp-source.log" 2>&1 || die "smtp-source failed: $(tail -n 2 "$work/smtp-source.log")"
  s=$(since "$t0")
  stop_serve
  c_rate=$(calc '%.0f' "$m / $s")
  rm -rf "$cv" "$cv.key"
}
without='' with=''
for ((r = 0; r < runs; r++)); do
  if ((r % 2)); then
    capture_run with "$r"; with="$with $c_rate"
    capture_run without "$r"; without="$without $c_rate"
  else
    capture_run without "$r"; without="$without $c_rate"
    capture_run with "$r"; with="$with $c_rate"
  fi
  log "capture run $r: $(tr ' ' '\n' <<<"$with" | tail -n 1) msg/s with policies, $(tr ' ' '\n' <<<"$without" | tail -n 1) without"
done
med_without=$(median "$without") med_with=$(median "$with")

echo
echo "purge_bench: $stored messages, $purged purged; capture $m messages x $runs runs, $sessions sessions"
echo
target "purge rate / import rate" "$(calc '%.2f' "$purge_rate / $import_rate")" ">=" 1.0
info "  import (msg/s)" "$import_rate"
info "  purge, approval to done (msg/s)" "$purge_rate"
info "  purged = what-if's purgeable" "$([[ $purged == "$purgeable" ]] && echo yes || echo "no ($purged vs $purgeable)")"
info "  packs before -> after (MiB)" "$(mib $((packs_before / 1024))) -> $(mib $((packs_after / 1024)))"
info "  vault before -> after (MiB)" "$(mib $((vault_before / 1024))) -> $(mib $((vault_after / 1024)))"
target "SMTP capture with policies / without (medians)" "$(calc '%.3f' "$med_with / $med_without")" ">=" 0.95
info "  without policies (msg/s, median)" "$med_without"
info "  with policies (msg/s, median)" "$med_with"
info "  runs without" "$(echo $without)"
info "  runs with" "$(echo $with)"
[[ $keep == 1 ]] && log "kept $work"
exit "$failed"
