#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 30) on its seeds,
# with its dictionary. Findings land in build/fuzz/findings/. SECONDS=0 only replays the seeds
# (what scripts/test.sh does, so the targets keep building and the seeds keep passing).
#   fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cmake -S . -B build/fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILVAULT_FUZZ=ON -DMAILVAULT_TESTS=OFF >/dev/null
ninja -C build/fuzz fuzz_message fuzz_mbox fuzz_pack fuzz_extract fuzz_query fuzz_smtp fuzz_journal fuzz_api fuzz_imap fuzz_control fuzz_policy fuzz_offsite
mkdir -p build/fuzz/findings
for t in message mbox pack extract query smtp journal api imap control policy offsite; do
  dict=fuzz/message.dict
  [[ -f fuzz/$t.dict ]] && dict=fuzz/$t.dict
  work=build/fuzz/corpus-$t
  mkdir -p "$work"
  if [[ $secs == 0 ]]; then
    echo "== fuzz_$t: replaying its seeds"
    if ! "build/fuzz/fuzz/fuzz_$t" -runs=0 "fuzz/seeds/$t" >"build/fuzz/replay-$t.log" 2>&1; then
      cat "build/fuzz/replay-$t.log"; echo "fuzz_$t fails on its own seeds"; exit 1
    fi
    grep -E "^Done" "build/fuzz/replay-$t.log"
    continue
  fi
  echo "== fuzz_$t for ${secs}s"
  "build/fuzz/fuzz/fuzz_$t" "$work" "fuzz/seeds/$t" -dict="$dict" -max_total_time="$secs" \
    -rss_limit_mb=2048 -timeout=10 -max_len=262144 -artifact_prefix=build/fuzz/findings/ -print_final_stats=1 2>&1 |
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|SUMMARY|Done" || true
done
if compgen -G "build/fuzz/findings/*" >/dev/null; then
  echo "findings:"; ls build/fuzz/findings; exit 1
fi
echo "no findings"
