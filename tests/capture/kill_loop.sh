#!/usr/bin/env bash
# Crash test of `mailvault serve`: no acknowledged message may be lost to a kill -9.
#
#   kill_loop.sh BIN CYCLES
#
# Creates a vault in a temporary directory, starts `BIN serve` on a free port and
# tests/capture/ack_client.py against it (4 sessions, running across all restarts; every
# message answered 250 is fsynced to a log first). Then CYCLES times: wait a random
# 0.3-1.5 s, `kill -9` serve, start it again on the same port. At the end: stop the client,
# SIGTERM serve (must exit 0), check_acked.py (every logged Message-ID must be in the vault;
# `mailvault check` must find the index level with the vault) and `mailvault verify` (must
# be clean). About 1 s per cycle.
#
# Prints "acknowledged N, missing 0, verify clean" and exits 0; on any loss, a serve that
# does not come back, a failed verify: exits 1 and keeps the work directory (also kept with
# KEEP=1). Environment: SESSIONS (default 4), SERVE_ARGS (extra serve arguments, e.g.
# --no-index), PYTHON (default python3).
set -uo pipefail

if (($# != 2)) || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 MAILVAULT_BINARY CYCLES" >&2
  exit 2
fi
bin=$(realpath "$1")
cycles=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
py=${PYTHON:-python3}
sessions=${SESSIONS:-4}
[[ -x $bin ]] || { echo "kill_loop: $bin is not executable" >&2; exit 2; }

work=$(mktemp -d /tmp/mv-killloop.XXXXXX) || exit 1
vault=$work/vault
key=$work/key
log=$work/acked.log
slog=$work/serve.log
serve_pid=
client_pid=
failed=0

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  [[ -n $client_pid ]] && kill "$client_pid" 2>/dev/null
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null
  wait 2>/dev/null
  if ((failed == 0)) && [[ ${KEEP:-0} != 1 ]]; then
    rm -rf "$work"
  else
    echo "kill_loop: work directory kept: $work"
  fi
}
trap cleanup EXIT

# kill_loop's own fail, not lib.sh's: "kill_loop: FAIL: ..." lines, and the exit status in failed
fail() {
  echo "kill_loop: FAIL: $*"
  failed=1
}

"$bin" --vault "$vault" --key-file "$key" init >"$work/init.out" 2>&1 || {
  fail "init failed: $(cat "$work/init.out")"
  exit 1
}
port=$(free_port) || { fail "no free port"; exit 1; }

# start_serve: serve in the background (pid in serve_pid), waits until it listens.
start_serve() {
  echo "---- start $(date +%T.%N)" >>"$slog"
  local t0
  t0=$(date +%s%N)
  # shellcheck disable=SC2086
  "$bin" --vault "$vault" --key-file "$key" serve --smtp "127.0.0.1:$port" ${SERVE_ARGS:-} >>"$slog" 2>&1 &
  serve_pid=$!
  local deadline=$((SECONDS + 15))
  while ! mv__port_listening "$port"; do
    if ! kill -0 "$serve_pid" 2>/dev/null; then
      wait "$serve_pid"
      fail "serve exited ($?) at start; log tail:"
      tail -n 15 "$slog" | sed 's/^/  | /'
      serve_pid=
      return 1
    fi
    if ((SECONDS >= deadline)); then
      fail "serve does not listen on 127.0.0.1:$port after 15 s; log tail:"
      tail -n 15 "$slog" | sed 's/^/  | /'
      return 1
    fi
    sleep 0.01
  done
  local ms=$((($(date +%s%N) - t0) / 1000000))
  echo "---- listening after $ms ms" >>"$slog"
  start_ms_total=$((start_ms_total + ms))
  ((ms > start_ms_max)) && start_ms_max=$ms
  starts=$((starts + 1))
}
start_ms_total=0
start_ms_max=0
starts=0

acked() { if [[ -f $log ]]; then wc -l <"$log"; else echo 0; fi; }

start=$SECONDS
start_serve || exit 1
"$py" "$here/ack_client.py" --port "$port" --sessions "$sessions" --messages 100000000 \
  --seconds $((cycles * 5 + 60)) --log "$log" >"$work/client.out" 2>&1 &
client_pid=$!

for ((i = 1; i <= cycles; i++)); do
  random_sleep 300 1500
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    wait "$serve_pid"
    fail "cycle $i: serve died on its own (exit $?); log tail:"
    tail -n 15 "$slog" | sed 's/^/  | /'
    serve_pid=
    break
  fi
  kill -9 "$serve_pid"
  wait "$serve_pid" 2>/dev/null
  echo "---- kill -9 $(date +%T.%N) (cycle $i, acknowledged so far $(acked))" >>"$slog"
  serve_pid=
  start_serve || break
  if ! kill -0 "$client_pid" 2>/dev/null; then
    fail "cycle $i: ack_client exited early: $(cat "$work/client.out")"
    break
  fi
done

# let the client finish against the last serve for a moment, then stop it
sleep 0.5
if [[ -n $client_pid ]]; then
  kill -TERM "$client_pid" 2>/dev/null
  wait "$client_pid"
  crc=$?
  client_pid=
  cat "$work/client.out"
  ((crc == 0)) || fail "ack_client exit status $crc"
fi
if [[ -n $serve_pid ]]; then
  kill -TERM "$serve_pid"
  wait "$serve_pid"
  src=$?
  serve_pid=
  ((src == 0)) || { fail "serve exit status $src after SIGTERM; log tail:"; tail -n 10 "$slog" | sed 's/^/  | /'; }
fi
kills=$(grep -c '^---- kill -9' "$slog")
recoveries=$(grep -c 'mailvault serve: vault:' "$slog")

"$py" "$here/check_acked.py" --log "$log" --vault "$vault" --key-file "$key" --mailvault "$bin" --check-index \
  >"$work/check.out" 2>&1
crc=$?
cat "$work/check.out"
((crc == 0)) || fail "check_acked.py exit status $crc"
missing=$(sed -n 's/.*acknowledged [0-9]*, missing \([0-9]*\),.*/\1/p' "$work/check.out")
n=$(sed -n 's/.*acknowledged \([0-9]*\), missing.*/\1/p' "$work/check.out")

"$bin" --vault "$vault" --key-file "$key" verify >"$work/verify.out" 2>&1
vrc=$?
if ((vrc == 0)); then
  verify="verify clean"
else
  verify="verify FAILED (exit $vrc)"
  fail "mailvault verify exit $vrc:"
  tail -n 20 "$work/verify.out" | sed 's/^/  | /'
fi
[[ ${n:-0} -gt 0 ]] || fail "nothing was acknowledged"
echo "kill_loop: $kills kills in $((SECONDS - start)) s; serve listened $((start_ms_total / (starts > 0 ? starts : 1))) ms after start on average, at most $start_ms_max ms; $recoveries vault messages at restart (in $slog)"
echo "acknowledged ${n:-?}, missing ${missing:-?}, $verify"
exit $failed
