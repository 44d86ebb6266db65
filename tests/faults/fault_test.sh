#!/usr/bin/env bash
# Fault injection under `mailvault serve` (docs/faults.md). SMTP clients send distinct
# messages all the time (fault_client.py: ack_client.py's sessions, retrying every 4xx);
# fault_shim.c, preloaded into serve, fails chosen calls with ENOSPC or EIO, one phase at a
# time: pack write, pack fdatasync, SEAL, new pack, catalog write/sync, state-store sync.
# Each phase checks: no 250 while the pack cannot be written or synced, /healthz 503 while
# the vault's commit path fails (the state store: an API write fails instead of succeeding),
# capture and /healthz back within seconds of the fault clearing (no latch). At the end:
# every acknowledged message is in the vault byte for byte, and `verify` is clean.
#   tests/faults/fault_test.sh path/to/mailvault path/to/libmv_fault_shim.so
# Exit 77 (ctest: skipped) in an AddressSanitizer build.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../capture/servers.sh
source "$here/../capture/servers.sh"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

mv_bin=$(realpath "$1")
shim=$(realpath "${2:-$(dirname "$mv_bin")/../tests/faults/libmv_fault_shim.so}")
admin=$(mailvault_admin "$mv_bin")
if links_asan "$admin" "$mv_bin" 2>/dev/null; then
  echo "SKIP: an AddressSanitizer build (its runtime must be first; LD_PRELOAD clashes)"
  exit 77
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed"; exit 1; }
done
[[ -f $shim ]] || { echo "FAIL: no fault shim at $shim"; exit 1; }

work=$(mktemp -d /tmp/mv-faults.XXXXXX)
serve_pid="" client_pid=""
cleanup() {
  [[ -n $client_pid ]] && kill -9 "$client_pid" 2>/dev/null
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null
  keep_or_remove_work "kept $work for inspection"
}
trap cleanup EXIT

vault=$work/vault key=$work/master.key
control=$work/control flog=$work/faults.log
acks=$work/acks refusals=$work/refusals
: >"$control"; : >"$acks"; : >"$refusals"; : >"$flog"
mvault init >/dev/null || { echo "FAIL: init"; exit 1; }
# 1 MiB packs (the smallest seal size): random-looking mail rolls a pack every second or two.
cat >"$work/mailvault.conf" <<EOF
vault = $vault
key-file = $key
seal-bytes = 1048576
EOF
api_pass=fault-probe-password-1
echo "$api_pass" | mvault user add faultop --role operator >/dev/null || { echo "FAIL: user add"; exit 1; }

smtp_port=$(free_port) http_port=$(free_port)
start_serve() {
  MV_FAULT_CONTROL=$control MV_FAULT_LOG=$flog LD_PRELOAD=$shim \
    "$mv_bin" --config "$work/mailvault.conf" serve --no-index \
    --smtp "127.0.0.1:$smtp_port" --http "127.0.0.1:$http_port" 2>>"$work/serve.log" &
  serve_pid=$!
  wait_port "$smtp_port" 30 && wait_port "$http_port" 30
}
start_serve || { echo "FAIL: serve did not start"; tail -n 20 "$work/serve.log"; exit 1; }

now() { date +%s.%N; }
healthz() { curl -s -m 5 -o "$work/healthz.body" -w '%{http_code}' "http://127.0.0.1:$http_port/healthz"; }
login_code() {
  curl -s -m 10 -o "$work/login.body" -w '%{http_code}' -X POST "http://127.0.0.1:$http_port/api/v1/auth/login" \
    -d "{\"username\":\"faultop\",\"password\":\"$api_pass\"}"
}
set_fault() { printf '%s\n' "$@" >"$control.tmp"; mv -f "$control.tmp" "$control"; }
clear_fault() { : >"$control.tmp"; mv -f "$control.tmp" "$control"; }
# acks whose 250 came in (A, B) (unix times); refusals likewise
acks_between() { awk -v a="$1" -v b="$2" '$4 > a && $4 < b' "$acks" | wc -l; }
refusals_between() { awk -v a="$1" -v b="$2" '$1 > a && $1 < b' "$refusals" | wc -l; }
injected_since() { tail -c +"$(($1 + 1))" "$flog" | grep -c '^inject'; }
wait_for() { # wait_for SECONDS COMMAND...: poll every 0.1 s
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS >= deadline)) && return 1; sleep 0.1; done
}
health_is() { [[ $(healthz) == "$1" ]]; }
acked_since() { (($(acks_between "$1" 9999999999) > 0)); }
reached() { (($(injected_since "$1") > 0)); }

python3 "$here/fault_client.py" --port "$smtp_port" --sessions 6 --messages 100000000 --seconds 900 \
  --log "$acks" --keep "$work/sent" --refusals "$refusals" --timeout 20 >"$work/client.log" 2>&1 &
client_pid=$!

check "capture runs before any fault" wait_for 15 acked_since 0
check "/healthz is 200 before any fault" health_is 200
check "an API login works before any fault" test "$(login_code)" = 200

summary=()
# phase NAME KIND REACH_SECS HOLD_SECS RULE...
#   KIND vault: /healthz must turn 503; pack: also no 250 while it lasts;
#        state: also an API login made during the fault answers 200 once it clears
phase() {
  local name=$1 kind=$2 reach=$3 hold=$4; shift 4
  local off0 t_on t_503="" t_clear t_back="" t_ok="" hit=0 during code="" after_code=""
  off0=$(stat -c %s "$flog")
  t_on=$(now)
  set_fault "$@"
  # The state store is written only by API requests: start one (a login, which is audited)
  # once the rule is in. It waits out the fault (vault/patient_fs.h) and answers after.
  local login_pid=""
  if [[ $kind == state ]]; then
    sleep 0.2
    login_code >"$work/login.code" &
    login_pid=$!
  fi
  if wait_for "$reach" reached "$off0"; then hit=1; fi
  if ((hit)); then
    if wait_for 5 health_is 503; then
      t_503=$(now)
      pass "$name: /healthz 503 while failing ($(python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["vault"]; print(v.get("error","")[:110])' "$work/healthz.body"))"
    else
      fail "$name: the fault was reached but /healthz did not turn 503"
    fi
    sleep "$hold"
  else
    echo "note $name: the fault was not reached within ${reach}s (nothing called it)"
  fi
  t_clear=$(now)
  if [[ $kind == pack ]] && ((hit)); then
    # 0.3 s after the rule went in (the shim looks every 20 ms), until it is taken out
    during=$(acks_between "$(awk -v a="$t_on" 'BEGIN { printf "%.3f", a + 0.3 }')" "$t_clear")
    check "$name: no 250 while the pack could not be written or synced ($during)" test "$during" -eq 0
  fi
  clear_fault
  if [[ -n $login_pid ]]; then
    wait "$login_pid"
    code=$(cat "$work/login.code")
    check "$name: the login made during the fault answers once it clears (HTTP $code)" test "$code" = 200
  fi
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    # A crash loses nothing acknowledged (the final checks say so), but it is not a recovery.
    # (Debian's librocksdb aborts on reuse of a file whose write failed; vault/patient_fs.h is
    # why no phase should get here.)
    local rc=0
    wait "$serve_pid" 2>/dev/null || rc=$?
    fail "$name: serve died with status $rc ($(grep -v 'mailvault serve:' "$work/serve.log" | tail -n 1 | cut -c 1-200)); restarted"
    start_serve || { echo "FAIL: serve did not restart"; tail -n 20 "$work/serve.log"; exit 1; }
    wait_for 15 acked_since "$(now)" || fail "$name: no capture after the restart"
  fi
  if wait_for 10 acked_since "$t_clear"; then t_back=$(now); fi
  check "$name: capture resumes after the fault clears" test -n "$t_back"
  if wait_for 10 health_is 200; then t_ok=$(now); fi
  check "$name: /healthz is 200 again" test -n "$t_ok"
  if [[ $kind == state ]]; then
    after_code=$(login_code)
    check "$name: an API login works again after the fault clears (HTTP $after_code)" test "$after_code" = 200
  fi
  local end; end=$(now)
  local line
  line=$(printf '%-34s reached=%d acked=%d refused=%d resumed_after=%s' "$name" "$hit" \
    "$(acks_between "$t_on" "$end")" "$(refusals_between "$t_on" "$end")" \
    "$([[ -n $t_back ]] && awk -v a="$t_back" -v b="$t_clear" 'BEGIN { printf "%.1fs", a - b }' || echo never)")
  summary+=("$line")
  echo "     $line"
  sleep 2  # some clean traffic between phases
}

phase "pack write ENOSPC" pack 5 3 "write /packs/ ENOSPC"
phase "pack write EIO" pack 5 3 "write /packs/ EIO"
phase "pack fdatasync EIO" pack 5 3 "sync /packs/ EIO"
phase "pack fdatasync ENOSPC" pack 5 3 "sync /packs/ ENOSPC"
# SEAL: only small writes to packs fail (a SEAL record, not a group append), until a roll.
phase "SEAL write EIO" vault 30 3 "write /packs/ EIO 256"
phase "SEAL write ENOSPC" vault 30 3 "write /packs/ ENOSPC 256"
phase "new pack ENOSPC" vault 30 3 "create /packs/ ENOSPC"
phase "new pack EIO" vault 30 3 "create /packs/ EIO"
# The catalog skips the WAL: its files are written when a memtable flushes (16 MiB), so this
# waits for a flush under load.
phase "catalog write ENOSPC" vault 120 3 "write /catalog/ ENOSPC" "sync /catalog/ ENOSPC"
phase "catalog write EIO" vault 120 3 "write /catalog/ EIO" "sync /catalog/ EIO" "create /catalog/ EIO"
# The state store's files wait out the fault too; the API request that met it answers after.
phase "state store sync EIO" state 5 2 "sync /state/ EIO"
phase "state store write ENOSPC" state 5 2 "write /state/ ENOSPC"

# ---- stop, then check what was acknowledged ----
kill -TERM "$client_pid"; wait "$client_pid"; client_rc=$?; client_pid=""
tail -n 1 "$work/client.log"
check "the clients had no message rejected (5xx) and some acknowledged" test "$client_rc" -eq 0
kill -TERM "$serve_pid"; wait "$serve_pid"; serve_rc=$?; serve_pid=""
check "SIGTERM: serve exits 0" test "$serve_rc" -eq 0

python3 "$here/../capture/check_acked.py" --log "$acks" --vault "$vault" --key-file "$key" \
  --mailvault "$mv_bin" >"$work/check_acked.log" 2>&1
check "every acknowledged Message-ID is in the vault ($(head -c 200 "$work/check_acked.log" | head -n 1))" test $? -eq 0

# Byte for byte: export everything to a Maildir, hash each file, compare with what was sent.
mvault export --to maildir "$work/export" >/dev/null 2>"$work/export.log"
python3 - "$acks" "$work/sent" "$work/export" >"$work/bytes.log" 2>&1 <<'EOF'
import hashlib, os, sys
acks, sent, export = sys.argv[1:4]
stored = {}
for d, _, files in os.walk(export):
    for f in files:
        b = open(os.path.join(d, f), "rb").read()
        stored[hashlib.sha256(b).hexdigest()] = b
acked, lost, mismatch = 0, [], []
for ln in open(acks):
    fields = ln.split()
    if len(fields) < 4:
        continue
    acked += 1
    sha = fields[2]
    want = open(os.path.join(sent, sha), "rb").read()
    if sha not in stored:
        lost.append(fields[0])
    elif stored[sha] != want:
        mismatch.append(fields[0])
print("acked %d lost %d mismatched %d exported %d" % (acked, len(lost), len(mismatch), len(stored)))
for m in (lost + mismatch)[:20]:
    print("LOST or different:", m)
sys.exit(1 if lost or mismatch or acked == 0 else 0)
EOF
bytes_rc=$?
check "every acknowledged message is in the vault byte for byte ($(head -n 1 "$work/bytes.log"))" test $bytes_rc -eq 0
mvault verify >"$work/verify.log" 2>&1
check "verify is clean" test $? -eq 0
[[ $failures -gt 0 ]] && tail -n 5 "$work/verify.log"

echo "---- per phase (acked/refused counted from the fault going in to the end of recovery) ----"
printf '     %s\n' "${summary[@]}"
n_acked=$(wc -l <"$acks")
n_lost=$(awk '{print $4}' <<<"$(head -n 1 "$work/bytes.log")")
n_refused=$(wc -l <"$refusals")
echo "fault_injection: acked=$n_acked lost=${n_lost:-?} refused=$n_refused failures=$failures"
exit $((failures > 0))
