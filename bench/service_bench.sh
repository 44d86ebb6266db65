#!/usr/bin/env bash
# Service benchmark (issue 14): one `mailvault serve` owns the vault; a restore runs as its job
# while journal capture goes on beside it. In one run, on one private Dovecot:
#   1. mbsync pushes the corpus Maildir into an empty mailbox (the peer), R runs;
#   2. `mailvault list`, `show ID` and `stats` against the stopped vault, 5 runs each;
#   3. serve starts (--smtp, --http, a [restore-target] on the Dovecot); the same three
#      commands through its control socket, 5 runs each;
#   4. bench/smtp_load.py captures at 150 msg/s over 4 connections (the end of DATA to 250
#      time of each message recorded), and meanwhile R restores of the whole corpus run as jobs
#      (POST /api/v1/restores, each into a fresh mailbox through "map"), timed from the POST
#      to the job's "done";
#   5. the load stops, serve stops; every Message-ID the load got a 250 for must be in the
#      vault (`mailvault list --json`), and every restored mailbox must hold each corpus
#      message exactly once (tests/recovery/imap_tool.py verify, server side).
#
# usage: bench/service_bench.sh [N] [--runs R] [--rate MSGS_PER_S] [--keep]
#   N        corpus messages (the first N in name order; default all, 6046)
#   --runs   restores and mbsync runs (default 3; best and median reported)
# Environment: MV (the mailvault binary, default build/release/cli/mailvault),
# MAILVAULT_CORPUS (default ~/.cache/mailvault/corpus/maildir). As root (Dovecot).
set -uo pipefail
repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
bench_name=service_bench
# shellcheck source=lib.sh
source "$repo_root/bench/lib.sh"
# shellcheck source=../tests/recovery/servers.sh
source "$repo_root/tests/recovery/servers.sh"

n='' runs=3 rate=150 keep=0
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    [0-9]*) n=$1; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
MV=${MV:-$repo_root/build/release/cli/mailvault}
[[ -x $MV ]] || die "no mailvault binary at $MV (scripts/build.sh release)"
command -v mbsync >/dev/null || die "mbsync (isync) is not installed"
corpus=${MAILVAULT_CORPUS:-$HOME/.cache/mailvault/corpus/maildir}
[[ -d $corpus/cur ]] || die "no corpus at $corpus (scripts/fetch-corpus.sh)"

bench_scratch mvsb
dv=$work/dv serve_pid='' load_pid=''
stop_all() { # shellcheck disable=SC2317  # the EXIT trap
  [[ -n $load_pid ]] && kill "$load_pid" 2>/dev/null
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  dovecot_stop "$dv" >/dev/null 2>&1 || true
  bench_cleanup
}
trap stop_all EXIT

# The Maildir of the first N distinct messages (byte-identical copies in the corpus are left
# out: the vault keeps one, mbsync pushes both, and "each exactly once" would not apply).
maildir=$work/md
mkdir -p "$maildir/cur" "$maildir/new" "$maildir/tmp"
mapfile -t files < <(find "$corpus/cur" -maxdepth 1 -type f | sort | python3 -c '
import hashlib, sys
seen = set()
for line in sys.stdin:
    p = line.rstrip("\n")
    h = hashlib.sha256(open(p, "rb").read()).digest()
    if h not in seen:
        seen.add(h)
        print(p)')
[[ -n $n ]] || n=${#files[@]}
((n <= ${#files[@]})) || die "the corpus has ${#files[@]} distinct messages, not $n"
cp -- "${files[@]:0:n}" "$maildir/cur/"
mapfile -t mfiles < <(find "$maildir/cur" -type f | sort)

DP=$(free_port) LP=$(free_port) SP=$(free_port) HP=$(free_port)
dovecot_imap_start "$dv" "$DP" "$LP" >/dev/null || die "Dovecot did not start"
export MAILVAULT_VAULT=$work/vault MAILVAULT_KEY_FILE=$work/key
mv() { "$MV" "$@"; }
mv init >/dev/null || die "mailvault init"
t0=$EPOCHREALTIME
mv import -q --custodian alice@example.test "$maildir" >"$work/import.log" 2>&1 || die "import: $(tail -n 3 "$work/import.log")"
log "imported $n messages in $(since "$t0") s"

# check_box USER strict|count: USER's INBOX against the Maildir, server side. strict: every
# message exactly once, byte for byte apart from the restore marker (the restore's promise);
# count: as many messages as files and no duplicate (mbsync rewrites a few messages' bytes
# as it pushes them, 8 of the corpus, so they match no file).
check_box() {
  imap_tool --port "$DP" --user "$1" --password "$MV_DOVECOT_USER_PASS" --timeout 300 verify --match delivered \
    --ignore-header X-TUID --ignore-header X-Mailvault-Restore --folder INBOX "${mfiles[@]}" >"$work/verify-$1.json" 2>&1
  python3 - "$work/verify-$1.json" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ok = d["found"] == d["expected"] and not d["duplicates"]
if sys.argv[2] == "strict":
    ok = ok and not d["missing"] and not d["unexpected"]
sys.exit(0 if ok else 1)
PY
}

# ---- 1. mbsync ----------------------------------------------------------------------------------
mb_rates=''
for ((r = 1; r <= runs; r++)); do
  copy=$work/mb-$r
  cp -a "$maildir" "$copy"
  mbsync_push_rc "$work/mbsyncrc-$r" "$copy" "mb$r@example.test" "$DP"
  sync
  t0=$EPOCHREALTIME
  mbsync -c "$work/mbsyncrc-$r" -q push >"$work/mbsync-$r.log" 2>&1 || die "mbsync run $r: $(tail -n 3 "$work/mbsync-$r.log")"
  s=$(since "$t0")
  mb_rates+="$(calc '%.1f' "$n / $s") "
  check_box "mb$r@example.test" count || die "mbsync run $r: the mailbox does not hold each message once ($work/verify-mb$r@example.test.json)"
  rm -rf "$copy"
  log "mbsync run $r: $n messages in $s s"
done

# ---- 2./3. list, show, stats: stopped vault, then through the service ------------------------
id=$(mv list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])') || die "list --json"
# time_cmd LABEL: 5 runs of each command, medians in t_list, t_show, t_stats (seconds)
time_cmds() {
  local c s all
  for c in list show stats; do
    all=''
    for ((k = 0; k < 5; k++)); do
      t0=$EPOCHREALTIME
      case $c in
        list) mv list >/dev/null ;;
        show) mv show "$id" >/dev/null ;;
        stats) mv stats >/dev/null ;;
      esac || die "$c failed ($1)"
      all+="$(since "$t0") "
    done
    printf -v "t_$c" '%s' "$(median "$all")"
  done
}
time_cmds stopped
stopped_list=$t_list stopped_show=$t_show stopped_stats=$t_stats

write_auth() { printf '%s\n' "$2" >"$1"; chmod 600 "$1"; }
write_auth "$work/restore.auth" "* $MV_DOVECOT_MASTER_USER $MV_DOVECOT_MASTER_PASS"
cat >"$work/mailvault.conf" <<EOF
[restore-target primary]
url = imap://127.0.0.1:$DP
auth-file = $work/restore.auth
no-tls = yes
EOF
admin_pw=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
echo "$admin_pw" | mv user add bench --role operator >/dev/null || die "user add"
"$MV" --config "$work/mailvault.conf" serve --smtp "127.0.0.1:$SP" --http "127.0.0.1:$HP" >"$work/serve.log" 2>&1 &
serve_pid=$!
for ((k = 0; k < 100; k++)); do [[ -S $work/vault/run/control.sock ]] && break; sleep 0.1; done
[[ -S $work/vault/run/control.sock ]] || die "serve did not start: $(tail -n 5 "$work/serve.log")"
time_cmds service
service_list=$t_list service_show=$t_show service_stats=$t_stats

api() { # api METHOD PATH [JSON]
  curl -s -X "$1" -H "Authorization: Bearer $token" ${3:+-d "$3"} "http://127.0.0.1:$HP$2"
}
token=$(curl -s -d "{\"username\":\"bench\",\"password\":\"$admin_pw\"}" "http://127.0.0.1:$HP/api/v1/auth/login" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || die "login"

# ---- 4. restores as jobs, with capture at $rate msg/s beside them --------------------------
python3 "$repo_root/bench/smtp_load.py" --port "$SP" --rate "$rate" --connections 4 \
  --acked "$work/acked" --latency "$work/latency" >"$work/load.json" 2>"$work/load.err" &
load_pid=$!
sleep 3
sv_rates=''
for ((r = 1; r <= runs; r++)); do
  t0=$EPOCHREALTIME
  job=$(api POST /api/v1/restores "{\"target\":\"primary\",\"users\":[\"alice@example.test\"],\"map\":{\"alice@example.test\":\"mvs$r@example.test\"},\"from\":\"2000-01-01T00:00:00Z\"}")
  jid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$job") || die "POST /restores: $job"
  state=''
  while :; do
    state=$(api GET "/api/v1/jobs/$jid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    [[ $state == done || $state == failed || $state == cancelled ]] && break
    sleep 0.05
  done
  s=$(since "$t0")
  [[ $state == done ]] || die "restore job $jid ended $state: $(api GET "/api/v1/jobs/$jid")"
  sv_rates+="$(calc '%.1f' "$n / $s") "
  check_box "mvs$r@example.test" strict || die "restore run $r: the mailbox does not hold each message once ($work/verify-mvs$r@example.test.json)"
  log "restore run $r (job $jid): $n messages in $s s, capture running"
done
sleep 2
kill "$load_pid"
wait "$load_pid"
load_pid=''
kill "$serve_pid"
wait "$serve_pid"
serve_pid=''

# ---- 5. nothing acknowledged is lost ----------------------------------------------------------
acked=$(wc -l <"$work/acked")
missing=$(mv list --json | python3 -c '
import json, sys
have = {m["message_id"] for m in json.load(sys.stdin)}
print(sum(1 for line in open(sys.argv[1]) if line.strip() and line.strip() not in have))' "$work/acked")
p99=$(sort -g "$work/latency" | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] }')
p50=$(sort -g "$work/latency" | awk '{ v[NR] = $1 } END { printf "%.3f", v[int((NR + 1) / 2)] }')
load=$(cat "$work/load.json")

mb_best=$(maxof "$mb_rates") sv_best=$(maxof "$sv_rates")
echo "## Restores through the service beside capture (issue 14) — $(date -u +%F)"
echo
echo "\`bench/service_bench.sh --runs $runs\` ($n messages, capture at $rate msg/s over 4 SMTP connections)."
echo
echo "- host: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM; $(uname -r)"
echo "- versions: $("$MV" --version 2>/dev/null | head -n 1); $(mbsync --version 2>/dev/null | head -n 1); Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1)"
echo "- capture load: $load"
echo
echo "| case | runs: msgs/s | best | median |"
echo "|---|---|---:|---:|"
echo "| mbsync push, empty mailbox | ${mb_rates% } | $mb_best | $(median "$mb_rates") |"
echo "| restore job through serve, capture at $rate msg/s beside it | ${sv_rates% } | $sv_best | $(median "$sv_rates") |"
echo
echo "| command (median of 5, seconds) | stopped vault | through serve | ratio |"
echo "|---|---:|---:|---:|"
for c in list show stats; do
  a=stopped_$c b=service_$c
  echo "| mailvault $c | ${!a} | ${!b} | $(calc '%.2f' "${!b} / ${!a}") |"
done
echo
label_width=58
printf "| %-${label_width}s | %12s | %-14s | %-4s |\n" measure value target ''
printf "|%s|%s|%s|%s|\n" "$(printf -- '-%.0s' $(seq 1 $((label_width + 2))))" "-------------:" "----------------" "------"
target "restore through serve / mbsync (best / best)" "$(calc '%.2f' "$sv_best / $mb_best")" ">=" 2.5
target "capture: end of DATA to 250, p99 (s)" "$p99" "<=" 0.5
info "capture: end of DATA to 250, median (s)" "$p50"
info "capture: messages acknowledged" "$acked"
target "capture: rate kept while the restores ran (msg/s)" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rate"])' "$work/load.json")" ">=" "$(calc '%.0f' "$rate * 0.95")"
target "capture: acknowledged messages missing from the vault" "$missing" "<=" 0
for c in list show stats; do
  a=stopped_$c b=service_$c
  target "mailvault $c through the socket / stopped vault" "$(calc '%.2f' "${!b} / ${!a}")" "<=" 1.5
done
exit "$failed"
