#!/usr/bin/env bash
# Policy benchmark (issue 15): `mailvault policy what-if` over a vault of N messages (default
# 200,000, made from the SpamAssassin corpus by bench/make_scale_corpus.py, imported in 10
# batches, each with its own custodian), against the index work it cannot do without: one
# `mailvault count` per policy query (what the searches alone cost). Target: what-if over
# 200,000 messages in at most 10 s.
#
# usage: bench/policy_bench.sh [--messages N] [--runs R] [--keep]
#   --messages N  messages in the generated vault (default 200000)
#   --runs R      time each measurement R times and keep the median (default 3)
#   --keep        keep the working directory
# Environment: MAILVAULT_BIN (default <repo>/build/release/cli/mailvault), MAILVAULT_CORPUS
# (default ~/.cache/mailvault/corpus/maildir), TMPDIR (needs about N x 12 KB).
set -euo pipefail
bench_name=policy_bench
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$script_dir/lib.sh"
TIME=/usr/bin/time
n=200000 runs=3 keep=0
while (($#)); do
  case $1 in
    --messages) n=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
mv_bin=${MAILVAULT_BIN:-$script_dir/../build/release/cli/mailvault}
[[ -x $mv_bin ]] || die "no mailvault binary at $mv_bin (scripts/build.sh release)"
maildir=${MAILVAULT_CORPUS:-$HOME/.cache/mailvault/corpus/maildir}
[[ -d $maildir/cur ]] || die "no corpus at $maildir (scripts/fetch-corpus.sh)"
[[ -x $TIME ]] || die "/usr/bin/time is missing (apt-get install time)"
bench_scratch mv-policy-bench
V=$work/vault K=$work/key
mv() { "$mv_bin" --vault "$V" --key-file "$K" "$@"; }

log "generating $n messages in 10 batches"
python3 "$script_dir/make_scale_corpus.py" --batches 10 "$maildir" "$work/corpus" "$n" 2>"$work/gen.log" || die "make_scale_corpus.py failed"
mv init >/dev/null
t0=$EPOCHREALTIME
for b in "$work"/corpus/batch-*; do
  mv import -q --custodian "user${b##*-}@corp.example" "$b" >>"$work/import.log" 2>&1 || die "import of $b failed"
done
log "imported $n messages in $(since "$t0") s"

# A set like a real one: a catch-all, a shorter explicit retention, holds by sender and by
# custodian, a review action, and a tag. The generated mail is dated 2019-2023.
cat >"$work/policies.json" <<'JSON'
[
  {"name": "default-7y", "kind": "retention", "keep": "7y"},
  {"name": "short-1y", "kind": "retention", "query": "subject:(re OR fwd)", "keep": "1y", "weight": 2},
  {"name": "legal-review", "kind": "retention", "custodians": ["user03@corp.example"], "keep": "2y", "action": "review"},
  {"name": "hold-sender", "kind": "hold", "case": "b-1", "query": "from:(yahoo.com OR hotmail.com)"},
  {"name": "hold-custodian", "kind": "hold", "case": "b-2", "custodians": ["user07@corp.example"]},
  {"name": "spam", "kind": "tag", "tag": "spam", "query": "subject:(viagra OR mortgage OR free)"}
]
JSON
whatif_times='' count_times=''
for ((r = 0; r < runs; r++)); do
  timed what-if "$work/whatif.$r.log" "$mv_bin" --vault "$V" --key-file "$K" policy what-if "$work/policies.json" --json
  whatif_times+=" $t_sec"
  t0=$EPOCHREALTIME
  for q in "subject:(re OR fwd)" "from:(yahoo.com OR hotmail.com)" "custodian:user07@corp.example" "subject:(viagra OR mortgage OR free)"; do
    mv count "$q" >/dev/null
  done
  count_times+=" $(since "$t0")"
done
wi=$(median "$whatif_times") ct=$(median "$count_times")
purgeable=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["messages"], d["purgeable"], d["held"], d["review"], d["kept"])' "$work/whatif.0.log")
echo "what-if over $n messages: median $wi s of $runs (target <= 10 s); messages purgeable held review kept: $purgeable"
echo "the four policy queries counted alone: median $ct s; what-if / counts = $(calc '%.1f' "$wi / $ct")"
