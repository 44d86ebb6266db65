#!/usr/bin/env bash
# End-to-end test of issue 14, "one service owns the vault": restore jobs run inside
# `mailvault serve` beside SMTP capture, driven over REST (POST /api/v1/restores, /jobs, the
# server-sent event stream) and over the command line through the control socket, against a
# private Dovecot on 127.0.0.1 (tests/recovery/servers.sh). Mailboxes are checked from the
# server's side with tests/recovery/imap_tool.py (verify --match delivered: each expected file
# exactly once), the CLI's output against the raw corpus files and against what the same
# commands print on a stopped vault, captured mail against what the SMTP client was told (250).
#
#   c  while serve runs (vault held), the command line goes through the service: list --json,
#      show ID --json, stats --json, cat ID, verify, user list, audit verify, job list, index
#      status, check, export --to mbox: each exits 0 and prints what it printed on the stopped
#      vault before serve started (cat: the raw corpus file's bytes; the mbox: every imported
#      Message-ID, read back with Python's mailbox module).
#   g  commands run side by side: `stats` answers while a dry run waits on a silent IMAP
#      server. `reindex` and `index compact` while serve runs are jobs of the service: exit 0,
#      the rebuilt index answers 4 queries with the counts the import's index gave before serve
#      started; GET /api/v1/jobs?kind=reindex lists both, started by the shell's user; a REST
#      reindex (POST /api/v1/jobs, admins only) paused and resumed ends done with every
#      message; `job list --kind reindex` (the job store) lists the three.
#   f  a reviewer gets 403 on POST /api/v1/restores; an unknown target is a 400.
#   a  1,000 corpus messages of alice imported before serve; a REST dry run plans exactly 1,000
#      to append; POST /api/v1/restores while tests/jobs/service_tool.py smtp-load sends a few
#      distinct messages a second to --smtp; kill -9 of serve once some (not all) are appended;
#      serve started again with the same flags finishes the job by itself (no request); the
#      mailbox holds each of the 1,000 files exactly once.
#   b  an EventSource-style reader (service_tool.py events) before the kill: event ids strictly
#      increasing, progress counters never decreasing; after the restart a new stream ends with
#      "event: end" and state done.
#   d  two clients at once (admin and operator): pause/resume storm on bob's job (then done,
#      each message once), cancel/pause/resume storm on erin's job (only 200/409, a successful
#      cancel ends cancelled, no duplicate); the job's state is the same in GET /jobs/{id},
#      GET /jobs?kind=restore and its event stream; a wrong password in the target's auth file
#      ends the job failed, naming the login, nothing appended; Dovecot down when the job
#      starts: failed with a reason, then Dovecot up, POST resume: done, each message once.
#      (dave's job retries the dead server for about a minute before it fails: part e runs
#      meanwhile.)
#   e  the control socket (0600 in a 0700 directory): uid 65534 can neither connect nor, on a
#      socket it can reach (a hard link, mode opened up for the check), run a command (exit
#      77, ten tries); idle, garbage and 10 MiB clients do not hold up `mailvault stats` run
#      at the same time, nor do 20 idle clients at once; serve stays up.
#   p  policies through the running service: `policy set`; a tag policy tags a message captured
#      over SMTP within seconds (`count tag:` reads the index alone); what-if's held count equals
#      the index's count of the held custodian and its outcomes add up to the vault's messages;
#      explain of a held message; hold place/release (GET /api/v1/holds); the audit entries.
#   z  SIGTERM: serve exits 0; every Message-ID the SMTP client got a 250 for is in the vault.
#
# usage: tests/jobs/service_test.sh PATH_TO_mailvault   (as root; ctest passes
#        $<TARGET_FILE:mailvault>). Needs dovecot-imapd and the corpus ($MAILVAULT_CORPUS,
#        default ~/.cache/mailvault/corpus/maildir). Prints "ok   ..." / "FAIL ..." lines and
#        the time each part took; exit 1 on any FAIL (the work directory is kept then;
#        MV_KEEP=1 keeps it always).
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"
# shellcheck source=../recovery/servers.sh
source "$here/../recovery/servers.sh"

(($# == 1)) || { echo "usage: $0 PATH_TO_mailvault" >&2; exit 2; }
MV=$(realpath "$1")
[[ -x $MV ]] || { echo "FAIL $1 is not an executable" >&2; exit 2; }
((EUID == 0)) || { echo "FAIL run as root (Dovecot, and the other-uid checks of the control socket)" >&2; exit 2; }
corpus=$(test_corpus)
[[ -d $corpus/cur ]] || { echo "FAIL no corpus at $corpus/cur (scripts/fetch-corpus.sh)" >&2; exit 2; }
command -v curl >/dev/null || { echo "FAIL curl is not installed" >&2; exit 2; }

work=$(mktemp -d /tmp/mv-service.XXXXXX)
chmod 755 "$work"
DV=$work/dv V=$work/vault K=$work/key CONF=$work/mailvault.conf
bgpids=() serve_pid="" smtp_pid=""
cleanup() {
  local p
  [[ -n $smtp_pid ]] && kill -9 "$smtp_pid" 2>/dev/null
  for p in "${bgpids[@]}"; do kill -9 "$p" 2>/dev/null; done
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null
  dovecot_stop "$DV" >/dev/null 2>&1
  if ((failures)) || [[ ${MV_KEEP:-0} == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
t_start=$SECONDS part_t=$SECONDS
part_done() { echo "     ($1) took $((SECONDS - part_t)) s"; part_t=$SECONDS; }

########################################################################################
# Helpers
########################################################################################

# service_tool.py (run directly, not through a function, when in the background: $! must be
# the Python process itself, so that kill reaches it).
TOOL=$here/service_tool.py
tool() { python3 "$TOOL" "$@"; }
# mvault ARGS...: mailvault on the test vault (through the service while serve runs).
mvault() { timeout -s KILL "${MV_CLI_TIMEOUT:-120}" "$MV" --vault "$V" --key-file "$K" "$@"; }

# wait_count QUERY WANT: polls `mailvault count QUERY` (the index alone, as a shell user's
# search) for up to 30 s until it answers WANT; prints its last answer.
wait_count() {
  local n='' k
  for ((k = 0; k < 100; k++)); do
    n=$("$MV" --vault "$V" --key-file "$K" count "$1" 2>/dev/null)
    [[ $n == "$2" ]] && break
    sleep 0.3
  done
  echo "$n"
}
# The oracle: imap_tool verify --match delivered on Dovecot (USER FOLDER FILE...).
dv_verify() {
  local label=$1 user=$2 folder=$3 out
  shift 3
  out=$(imap_tool --port "$DP" --user "$user" --password "$MV_DOVECOT_USER_PASS" \
    verify --match delivered --ignore-header X-Mailvault-Restore --folder "$folder" "$@" 2>&1)
  if [[ $? == 0 ]]; then
    pass "$label"
  else
    fail "$label: $(jpy "$out" "{k: d[k] for k in ('expected','found','missing','duplicates','unexpected')}" || echo "$out")"
  fi
}
# dv_count USER [FOLDER]: messages as IMAP STATUS reports them ("none": no such folder).
dv_count() {
  local r
  r=$(imap_tool --port "$DP" --user "$1" --password "$MV_DOVECOT_USER_PASS" count --folder "${2:-INBOX}" 2>/dev/null) || { echo none; return; }
  jpy "$r" "d['messages']"
}

# REST. api TOKEN METHOD PATH [BODY]: status in API_STATUS, body in API_BODY.
api() {
  local args=(-s -o "$work/api.out" -w '%{http_code}' --max-time 60 -X "$2" -H "Authorization: Bearer $1")
  [[ -n ${4:-} ]] && args+=(-H "Content-Type: application/json" --data "$4")
  : >"$work/api.out"
  API_STATUS=$(curl "${args[@]}" "$BASE$3" 2>/dev/null)
  API_BODY=$(cat "$work/api.out")
}
login() {   # login USER PASSWORD: prints the session token
  local out
  out=$(curl -s --max-time 30 -H "Content-Type: application/json" -X POST \
    --data "{\"username\":\"$1\",\"password\":\"$2\"}" "$BASE/api/v1/auth/login")
  jpy "$out" "d['token']"
}
login_all() {
  T_ADMIN=$(login svc-admin "$ADMIN_PW") T_OPER=$(login svc-oper "$OPER_PW") T_REV=$(login svc-rev "$REV_PW")
  [[ -n $T_ADMIN && -n $T_OPER && -n $T_REV ]] || fail "login of svc-admin/svc-oper/svc-rev (tokens '$T_ADMIN' '$T_OPER' '$T_REV')"
}
job_get() { api "$T_ADMIN" GET "/api/v1/jobs/$1"; JOB=$API_BODY; }
# wait_job ID REGEX SECONDS: polls GET /jobs/ID until its state matches REGEX; the state in
# JOB_STATE, the job in JOB; false on timeout.
wait_job() {
  local deadline=$((SECONDS + $3))
  while :; do
    job_get "$1"
    JOB_STATE=$(jpy "$JOB" "d['state']")
    [[ $JOB_STATE =~ ^($2)$ ]] && return 0
    ((SECONDS >= deadline)) && return 1
    sleep 0.3
  done
}
# post_restore TOKEN JSON: 202 expected; the job id in JOB_ID.
post_restore() {
  api "$1" POST /api/v1/restores "$2"
  JOB_ID=$(jpy "$API_BODY" "d['id']")
}
# events_bg ID OUT: an EventSource-style reader of the job's stream in the background.
events_bg() {
  python3 "$TOOL" events --url "$BASE/api/v1/jobs/$1/events" --token "$T_ADMIN" --out "$2" --timeout 180 &
  EV_PID=$!
  bgpids+=("$EV_PID")
}
wait_pid() {   # wait_pid PID SECONDS: true if it exited in time (else killed)
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -9 "$1" 2>/dev/null
      wait "$1" 2>/dev/null
      return 1
    fi
    sleep 0.1
  done
  wait "$1" 2>/dev/null
  return 0
}

start_serve() {   # start_serve: serve with --smtp and --http and the restore targets
  "$MV" --vault "$V" --key-file "$K" --config "$CONF" serve --smtp "127.0.0.1:$SP" --http "127.0.0.1:$HP" \
    2>>"$work/serve.log" &
  serve_pid=$!
  wait_port "$HP" 30 && wait_port "$SP" 10 || return 1
  local i
  for ((i = 0; i < 100; i++)); do [[ -S $V/run/control.sock ]] && break; sleep 0.1; done
  mv__pid_alive "$serve_pid"
}
acked() { [[ -s $work/acked.log ]] && wc -l <"$work/acked.log" || echo 0; }

########################################################################################
# Input: a corpus sample (unique Message-IDs, no bare CR or NUL, < 32 KB), one slice per user
########################################################################################

N_ALICE=1000
mapfile -t picks < <(python3 - "$corpus/cur" 1350 <<'PY'
import os, re, sys
d, want = sys.argv[1], int(sys.argv[2])
seen, n = set(), 0
for name in sorted(os.listdir(d)):
    p = os.path.join(d, name)
    data = open(p, "rb").read()
    if len(data) > 32768 or b"\r" in data or b"\0" in data:
        continue
    head = data.split(b"\n\n", 1)[0]
    m = re.search(rb"^message-id:[ \t]*(.*(?:\n[ \t].*)*)", head, re.I | re.M)
    if not m or not m.group(1).strip() or m.group(1).strip().lower() in seen:
        continue
    seen.add(m.group(1).strip().lower())
    print(p)
    n += 1
    if n == want:
        break
PY
)
((${#picks[@]} == 1350)) || { fail "corpus sample: ${#picks[@]} usable messages, want 1350"; exit 1; }
A_SET=("${picks[@]:0:1000}")       # alice (a, b)
B_SET=("${picks[@]:1000:150}")     # bob: pause/resume storm (d)
E_SET=("${picks[@]:1150:150}")     # erin: cancel/pause/resume storm (d)
C_SET=("${picks[@]:1300:10}")      # carol: wrong password (d)
D_SET=("${picks[@]:1310:40}")      # dave: Dovecot down (d)
N_ALL=${#picks[@]}

DP=$(free_port) LP=$(free_port) SP=$(free_port) HP=$(free_port)
BASE=http://127.0.0.1:$HP
dovecot_imap_start "$DV" "$DP" "$LP" >/dev/null || { fail "Dovecot did not start"; exit 1; }

mvault init >/dev/null 2>&1 || { fail "mailvault init"; exit 1; }
import_for() {   # import_for CUSTODIAN FILE...
  local who=$1
  shift
  mvault import -q --custodian "$who" "$@" >"$work/import.out" 2>&1 ||
    fail "import for $who: $(tail -n 2 "$work/import.out" | tr '\n' ' ')"
}
import_for alice@example.test "${A_SET[@]}"
import_for bob@example.test "${B_SET[@]}"
import_for erin@example.test "${E_SET[@]}"
import_for carol@example.test "${C_SET[@]}"
import_for dave@example.test "${D_SET[@]}"

ADMIN_PW=admin-secret-1234 OPER_PW=operator-secret-1234 REV_PW=reviewer-secret-1234
for u in "svc-admin admin $ADMIN_PW" "svc-oper operator $OPER_PW" "svc-rev reviewer $REV_PW"; do
  read -r name role pw <<<"$u"
  echo "$pw" | mvault user add "$name" --role "$role" >"$work/useradd.out" 2>&1 ||
    fail "user add $name --role $role: $(tr '\n' ' ' <"$work/useradd.out")"
done

write_auth "$work/auth-admin" "* $MV_DOVECOT_MASTER_USER $MV_DOVECOT_MASTER_PASS"
write_auth "$work/auth-carol-bad" "carol@example.test carol@example.test not-the-password"
cat >"$CONF" <<EOF
# tests/jobs/service_test.sh
[restore-target primary]
url = imap://127.0.0.1:$DP
auth-file = $work/auth-admin
no-tls = yes
timeout = 5

[restore-target badpass]
url = imap://127.0.0.1:$DP
auth-file = $work/auth-carol-bad
no-tls = yes
timeout = 5
EOF

# (c), before: what the commands print on the stopped vault.
ID1=$(sha256sum "${A_SET[0]}" | cut -d' ' -f1) ID2=$(sha256sum "${D_SET[5]}" | cut -d' ' -f1)
CLI_CMDS=("list:list --json" "show1:show $ID1 --json" "show2:show $ID2 --json" "cat1:cat $ID1" "cat2:cat $ID2"
  "stats:stats --json" "verify:verify" "userlist:user list" "audit:audit verify" "joblist:job list --kind restore"
  "index:index status" "check:check" "export:export --to mbox export.mbox")
run_cli_set() {   # run_cli_set DIR: each command's stdout, stderr, status and time in DIR
  local dir=$1 entry name t0
  mkdir -p "$dir"
  for entry in "${CLI_CMDS[@]}"; do
    name=${entry%%:*}
    t0=$(date +%s%N)
    # word splitting of the command is intended (no argument has a space)
    # shellcheck disable=SC2086
    (cd "$dir" && mvault ${entry#*:} >"$dir/$name.out" 2>"$dir/$name.err")
    echo $? >"$dir/$name.rc"
    echo $((($(date +%s%N) - t0) / 1000000)) >"$dir/$name.ms"
  done
}
run_cli_set "$work/pre"
for n in list stats cat1; do
  [[ $(cat "$work/pre/$n.rc") == 0 ]] || fail "(c) before serve: $n exited $(cat "$work/pre/$n.rc"): $(head -c 300 "$work/pre/$n.err")"
done
# (g)'s oracle: what the index the import built answers, before serve starts.
G_QUERIES=("subject:re" "money OR free" "from:(com OR org)" "subject:(mortgage OR viagra OR click)")
g_counts() { local q; for q in "${G_QUERIES[@]}"; do "$MV" --vault "$V" --key-file "$K" count "$q" 2>&1; done | tr '\n' ' '; }
PRE_COUNTS=$(g_counts)
[[ $PRE_COUNTS =~ [1-9] ]] || fail "(g) before serve: the queries find nothing ('$PRE_COUNTS'); the oracle would prove nothing"
echo "     setup done in $((SECONDS - t_start)) s"
part_t=$SECONDS

########################################################################################
# serve with --smtp and --http
########################################################################################

start_serve || { fail "serve did not start: $(tail -n 5 "$work/serve.log" | tr '\n' ' ')"; exit 1; }
pass "serve --smtp 127.0.0.1:$SP --http 127.0.0.1:$HP with restore targets started"
login_all

########################################################################################
# (c) the command line while serve runs
########################################################################################

sock=$V/run/control.sock
expect_eq "(c) the control socket is mode 0600, its directory 0700" \
  "$(stat -c %a "$sock" 2>/dev/null) $(stat -c %a "$V/run" 2>/dev/null)" "600 700"
run_cli_set "$work/live"
norm_numbers() { sed -E 's/[0-9a-f]{64}/HEX/g; s/[0-9]+(\.[0-9]+)?(e-?[0-9]+)?/N/g' "$1"; }
for entry in "${CLI_CMDS[@]}"; do
  name=${entry%%:*} cmd=${entry#*:}
  rc=$(cat "$work/live/$name.rc")
  if [[ $rc != 0 ]]; then
    fail "(c) '$cmd' while serve runs exited $rc: $(head -c 300 "$work/live/$name.err" | tr '\n' ' ')"
    continue
  fi
  case $name in
    stats)
      same=$(python3 - "$work/pre/stats.out" "$work/live/stats.out" "$N_ALL" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
keys = ("messages", "envelopes", "duplicates", "raw_bytes", "stored_bytes")
diff = {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}
print("ok" if not diff and b.get("messages") == int(sys.argv[3]) else "differs: %s, messages %s (want %s)" % (diff, b.get("messages"), sys.argv[3]))
PY
)
      [[ $same == ok ]] && pass "(c) stats --json through the service: the same counts as on the stopped vault ($N_ALL messages)" ||
        fail "(c) stats --json through the service: $same"
      ;;
    verify | audit)
      # timings and (audit) entry counts and heads change between the runs: compare the rest
      if diff <(norm_numbers "$work/pre/$name.out") <(norm_numbers "$work/live/$name.out") >/dev/null; then
        pass "(c) '$cmd' through the service: exit 0, the same report as on the stopped vault (numbers aside)"
      else
        fail "(c) '$cmd' through the service prints '$(head -c 300 "$work/live/$name.out" | tr '\n' ' ')', stopped: '$(head -c 300 "$work/pre/$name.out" | tr '\n' ' ')'"
      fi
      ;;
    *)
      if cmp -s "$work/pre/$name.out" "$work/live/$name.out"; then
        pass "(c) '$cmd' through the service: exit 0, prints exactly what it printed on the stopped vault ($(stat -c %s "$work/live/$name.out") bytes)"
      else
        fail "(c) '$cmd' through the service prints something else than on the stopped vault: now '$(head -c 200 "$work/live/$name.out" | tr '\n' ' ')', stopped '$(head -c 200 "$work/pre/$name.out" | tr '\n' ' ')'"
      fi
      ;;
  esac
done
# Independent oracles: the raw files and the imported Message-IDs.
cmp -s "$work/live/cat1.out" "${A_SET[0]}" && cmp -s "$work/live/cat2.out" "${D_SET[5]}" &&
  pass "(c) cat through the service: byte-identical to the raw corpus files" ||
  fail "(c) cat through the service differs from the raw corpus file"
cmp -s "$work/pre/export.mbox" "$work/live/export.mbox" &&
  pass "(c) export --to mbox through the service: the same file as on the stopped vault" ||
  fail "(c) export --to mbox through the service: the file differs from the stopped vault's ($(stat -c %s "$work/live/export.mbox" 2>/dev/null) vs $(stat -c %s "$work/pre/export.mbox" 2>/dev/null) bytes)"
printf '%s\n' "${picks[@]}" >"$work/picks.txt"
mb=$(python3 - "$work/live/export.mbox" "$work/picks.txt" <<'PY'
import email.parser, mailbox, sys
pol = email.parser.BytesHeaderParser()
want = set()
for p in open(sys.argv[2]).read().split("\n"):
    if p:
        want.add(" ".join(str(pol.parsebytes(open(p, "rb").read())["Message-ID"]).split()).lower())
got = [" ".join(str(m["Message-ID"]).split()).lower() for m in mailbox.mbox(sys.argv[1])]
print("ok" if sorted(got) == sorted(want) else "mbox holds %d (%d distinct), want the %d imported; %d missing, %d extra" % (
    len(got), len(set(got)), len(want), len(want - set(got)), len(set(got) - want)))
PY
)
[[ $mb == ok ]] && pass "(c) the exported mbox holds each of the $N_ALL imported Message-IDs once (Python's mailbox module)" ||
  fail "(c) exported mbox: $mb"
# The verify of the set ran as a job of the service: the job store lists it (job list reads
# every kind; the byte-for-byte comparison above took restores only, which the stopped vault
# had as well).
out=$(mvault job list --kind verify)
[[ $out =~ ^v[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\ \ done\ \ verify\ \ checked\ $N_ALL ]] &&
  pass "(c) the verify ran as a job of the service: \`job list --kind verify\` shows it done, $N_ALL checked" ||
  fail "(c) job list --kind verify after a verify through the service: '$out'"
slow=$(for n in list show1 cat1 stats; do printf '%s %s/%s ms  ' "$n" "$(cat "$work/pre/$n.ms")" "$(cat "$work/live/$n.ms")"; done)
echo "     (c) stopped/through the service: $slow"
part_done c

########################################################################################
# (g) commands side by side; reindex and compaction as jobs of the service
########################################################################################

# A dry run against a server that accepts and then says nothing holds its command for the
# whole --timeout; `stats` run meanwhile must not wait for it (commands run side by side).
hang_port=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
c, _ = s.accept(); time.sleep(30)' "$hang_port" &
hang_pid=$!
wait_port "$hang_port" 10 || fail "(g) the silent IMAP listener did not start"
write_auth "$work/auth-hang" "* admin secret"
mvault restore --dry-run --to "imap://127.0.0.1:$hang_port" --no-tls --auth-file "$work/auth-hang" \
  --users alice@example.test --timeout 15 >"$work/hang.out" 2>&1 &
hang_cli=$!
sleep 1
mvault stats --json >"$work/g-stats.out" 2>&1
g_rc=$?
if [[ $g_rc == 0 ]] && kill -0 "$hang_cli" 2>/dev/null; then
  pass "(g) \`stats\` answered while a dry run waited on a silent server (commands run side by side)"
else
  fail "(g) \`stats\` beside a waiting dry run: exit $g_rc, the dry run $(kill -0 "$hang_cli" 2>/dev/null && echo 'still waiting' || echo 'had ended'): $(head -c 200 "$work/g-stats.out")"
fi
wait "$hang_cli"
grep -q "sent nothing" "$work/hang.out" && pass "(g) the dry run then reported the silent server" ||
  fail "(g) the dry run against a silent server printed: $(head -c 300 "$work/hang.out" | tr '\n' ' ')"
kill "$hang_pid" 2>/dev/null
wait "$hang_pid" 2>/dev/null

# reindex through the service: a job on its workers; the rebuilt index answers as the one the
# import built before serve started (counted then, by the index alone).
out=$(mvault reindex 2>"$work/reindex.err")
rc=$?
if [[ $rc == 0 && $out =~ ^reindexed\ $N_ALL\ messages ]]; then
  pass "(g) \`mailvault reindex\` while serve runs: a job of the service, '$out'"
else
  fail "(g) reindex while serve runs: exit $rc, '$out' $(head -c 300 "$work/reindex.err")"
fi
expect_eq "(g) after the reindex, counts of ${#G_QUERIES[@]} queries as before serve started" "$(g_counts)" "$PRE_COUNTS"
out=$(mvault index compact 2>&1)
[[ $? == 0 && $out =~ ^compacted\ $N_ALL\ documents ]] && pass "(g) \`index compact\` while serve runs: '$out'" ||
  fail "(g) index compact while serve runs: '$out'"
api "$T_ADMIN" GET "/api/v1/jobs?kind=reindex&state=done"
expect_eq "(g) GET /api/v1/jobs?kind=reindex&state=done: both jobs, started by the shell's user" \
  "$(jpy "$API_BODY" "sorted((j['params']['compact'], j['started_by']) for j in d['jobs'])")" \
  "$(jpy '{}' "sorted([(False, '$(id -un)'), (True, '$(id -un)')])")"
# REST: a reindex started by an admin (operators may not), paused part-way, resumed: done.
api "$T_OPER" POST /api/v1/jobs '{"kind":"reindex"}'
expect_eq "(g) an operator starting a reindex" "$API_STATUS" 403
api "$T_ADMIN" POST /api/v1/jobs '{"kind":"reindex"}'
RJ=$(jpy "$API_BODY" "d['id']")
expect_eq "(g) POST /api/v1/jobs {kind: reindex} by an admin" "$API_STATUS $(jpy "$API_BODY" "d['kind']")" "202 reindex"
api "$T_ADMIN" POST "/api/v1/jobs/$RJ/pause"
wait_job "$RJ" "paused|done" 120
g_paused=$JOB_STATE
api "$T_ADMIN" POST "/api/v1/jobs/$RJ/resume"
wait_job "$RJ" "done|failed|cancelled" 300
expect_eq "(g) the REST reindex ($g_paused after the pause, then resumed) ends done, the index whole" \
  "$JOB_STATE $(jpy "$JOB" "d['report']['documents']")" "done $N_ALL"
expect_eq "(g) counts after the REST reindex as before serve started" "$(g_counts)" "$PRE_COUNTS"
out=$(mvault job list --kind reindex)
[[ $(grep -c "  done  reindex  " <<<"$out") == 3 ]] && pass "(g) \`job list --kind reindex\` (the job store) lists the 3 reindex jobs done" ||
  fail "(g) job list --kind reindex: $out"
part_done g

########################################################################################
# (f) roles, (d) unknown target
########################################################################################

api "$T_REV" POST /api/v1/restores '{"target":"primary","users":["alice@example.test"],"dry_run":true}'
expect_eq "(f) a reviewer's POST /api/v1/restores (dry run) is refused" "$API_STATUS" 403
api "$T_REV" POST /api/v1/restores '{"target":"primary","users":["alice@example.test"]}'
expect_eq "(f) a reviewer's POST /api/v1/restores is refused" "$API_STATUS" 403
api "$T_ADMIN" POST /api/v1/restores '{"target":"no-such-target","users":["alice@example.test"]}'
expect_eq "(d) a restore for an unknown target: 400" "$API_STATUS" 400
[[ $API_BODY == *no-such-target* ]] && pass "(d) the 400 names the target" || fail "(d) the 400 does not name the target: $API_BODY"
# A request naming its own server and auth file (the local command line's adhoc_target) would
# send a configured target's password wherever the caller chose: refused over REST.
api "$T_ADMIN" POST /api/v1/restores "{\"target\":\"primary\",\"users\":[\"alice@example.test\"],\"dry_run\":true,\"adhoc_target\":{\"url\":\"imap://127.0.0.1:1\",\"auth_file\":\"$work/auth-primary\",\"no_tls\":true}}"
expect_eq "(f) a REST restore naming its own server (adhoc_target) is refused: 400" "$API_STATUS" 400
api "$T_ADMIN" GET "/api/v1/jobs?kind=restore"
expect_eq "(d/f) no job was created by the refused requests" "$(jpy "$API_BODY" "len(d['jobs'])")" 0

########################################################################################
# (a) dry run, restore of 1,000 under capture, kill -9, restart, resumed by itself
########################################################################################

api "$T_OPER" POST /api/v1/restores '{"target":"primary","users":["alice@example.test"],"dry_run":true}'
expect_eq "(a) dry run (operator): 200" "$API_STATUS" 200
expect_eq "(a) dry run plans exactly $N_ALICE to append (sum over mailboxes)" "$(jpy "$API_BODY" "sum(m['to_append'] for m in d['plan'])")" "$N_ALICE"
expect_eq "(a) dry run: INBOX selected/present/to_append" \
  "$(jpy "$API_BODY" "[[m['selected'], m['present'], m['to_append']] for m in d['plan'] if m['folder']=='INBOX'][0]")" \
  "[$N_ALICE, 0, $N_ALICE]"
n=$(dv_count alice@example.test)
[[ $n == none || $n == 0 ]] && pass "(a) the dry run appended nothing" || fail "(a) the dry run left $n messages in INBOX"
api "$T_ADMIN" GET "/api/v1/jobs?kind=restore"
expect_eq "(a) a dry run makes no job" "$(jpy "$API_BODY" "len(d['jobs'])")" 0

# Capture beside the job: a few distinct messages a second, each 250 logged.
: >"$work/acked.log"
python3 "$TOOL" smtp-load --port "$SP" --log "$work/acked.log" --rate 4 >"$work/smtp-load.out" 2>&1 &
smtp_pid=$!
deadline=$((SECONDS + 20))
while (($(acked) < 3)) && ((SECONDS < deadline)); do sleep 0.2; done
(($(acked) >= 3)) && pass "(a) SMTP capture running ($(acked) acknowledged)" || fail "(a) the SMTP client got no 250s: $(cat "$work/smtp-load.out")"

# A query restore while capture keeps the index a change or two behind: planned, not refused.
api "$T_OPER" POST /api/v1/restores '{"target":"primary","users":["bob@example.test"],"query":"*","dry_run":true}'
expect_eq "(a) a query dry run while capture runs: 200" "$API_STATUS" 200
expect_eq "(a) ... planning all of bob's mail" "$(jpy "$API_BODY" "sum(m['selected'] for m in d['plan'])")" "${#B_SET[@]}"

t_job=$SECONDS
post_restore "$T_ADMIN" '{"target":"primary","users":["alice@example.test"],"bandwidth":120000,"batch":10}'
expect_eq "(a) POST /api/v1/restores: 202" "$API_STATUS" 202
AJ=$JOB_ID
expect_eq "(a) the 202 is a restore job" "$(jpy "$API_BODY" "[d['kind'], d['state'] in ('queued', 'running'), bool(d['id'])]")" '["restore", true, true]'
events_bg "$AJ" "$work/events-1.jsonl"
ev1_pid=$EV_PID

# Kill -9 once some but not all are appended (progress from GET /jobs/{id}).
deadline=$((SECONDS + 90)) app=0 cli_checked=0
while ((SECONDS < deadline)); do
  job_get "$AJ"
  app=$(jpy "$JOB" "d['progress'].get('appended', 0)")
  st=$(jpy "$JOB" "d['state']")
  [[ $st =~ ^(done|failed|cancelled)$ ]] && break
  if ((cli_checked == 0 && app > 0)); then
    # the command line while the job runs and capture goes on
    cli_checked=1
    t0=$(date +%s%N)
    out=$(mvault job list --json 2>&1)
    rc=$? ms=$((($(date +%s%N) - t0) / 1000000))
    if ((rc == 0)) && [[ $out == *"$AJ"* ]]; then pass "(c) job list --json while the job runs: lists $AJ (${ms} ms)"; else fail "(c) job list --json while the job runs: exit $rc: $(head -c 300 <<<"$out")"; fi
    t0=$(date +%s%N)
    out=$(mvault stats --json 2>&1)
    rc=$? ms=$((($(date +%s%N) - t0) / 1000000))
    ((rc == 0 && ms < 5000)) && pass "(c) stats --json while the job runs: exit 0 in ${ms} ms" || fail "(c) stats --json while the job runs: exit $rc in ${ms} ms"
  fi
  ((app >= 300)) && break
  sleep 0.2
done
if [[ $st == running ]] && ((app > 0 && app < N_ALICE)); then
  kill -9 "$serve_pid"
  wait "$serve_pid" 2>/dev/null
  serve_pid=""
  acked_at_kill=$(acked)
  at_kill=$(dv_count alice@example.test)
  echo "     (a) serve killed (-9) $((SECONDS - t_job)) s into the job: progress said $app appended, INBOX holds $at_kill, $acked_at_kill mails acknowledged so far"
  [[ $at_kill =~ ^[0-9]+$ ]] && ((at_kill > 0 && at_kill < N_ALICE)) && pass "(a) killed mid-job: $at_kill of $N_ALICE in the mailbox" ||
    fail "(a) the kill did not land mid-job: INBOX holds $at_kill"
else
  fail "(a) could not kill mid-job: state '$st', $app appended (job: $(head -c 400 <<<"$JOB"))"
  kill -9 "$serve_pid"
  wait "$serve_pid" 2>/dev/null
  serve_pid="" acked_at_kill=$(acked)
fi
wait_pid "$ev1_pid" 15 || fail "(b) the first event stream did not end when serve died"

# Same flags again; no request: the job must finish by itself.
start_serve || { fail "serve did not start again after kill -9: $(tail -n 5 "$work/serve.log" | tr '\n' ' ')"; exit 1; }
pass "(a) serve started again with the same flags"
login_all
events_bg "$AJ" "$work/events-2.jsonl"
ev2_pid=$EV_PID
if wait_job "$AJ" "done|failed|cancelled|paused" 180; then
  expect_eq "(a) the job finished by itself after the restart" "$JOB_STATE" "done"
else
  fail "(a) the job is still '$JOB_STATE' 180 s after the restart: $(head -c 400 <<<"$JOB")"
fi
expect_eq "(a) job: total/appended+present/failed" \
  "$(jpy "$JOB" "[d['progress']['total'], d['progress']['appended'] + d['progress']['present'], d['progress']['failed']]")" "[$N_ALICE, $N_ALICE, 0]"
runs=$(jpy "$JOB" "d['runs']")
[[ $runs =~ ^[0-9]+$ ]] && ((runs >= 2)) && pass "(a) the job ran $runs times (resumed after the kill)" || fail "(a) runs = '$runs', want >= 2"
echo "     (a) the job took $((SECONDS - t_job)) s in all"
dv_verify "(a) alice's INBOX holds each of the $N_ALICE files exactly once" alice@example.test INBOX "${A_SET[@]}"
(($(acked) > acked_at_kill)) && pass "(a) capture went on after the restart ($acked_at_kill acknowledged at the kill, $(acked) now)" ||
  fail "(a) no mail acknowledged after the restart ($(acked)): $(cat "$work/smtp-load.out")"

# (b) the event streams
wait_pid "$ev2_pid" 30 || fail "(b) the event stream after the restart did not end within 30 s of the job's end"
E1=$(tool events-check "$work/events-1.jsonl")
E2=$(tool events-check "$work/events-2.jsonl")
expect_eq "(b) the stream answers as text/event-stream" "$(jpy "$E1" "d['opened']['content_type'].split(';')[0]")" text/event-stream
n=$(jpy "$E1" "d['progress_events']")
[[ $n =~ ^[0-9]+$ ]] && ((n >= 3)) && pass "(b) $n progress events before the kill" || fail "(b) only '$n' progress events before the kill"
expect_eq "(b) before the kill: event ids strictly increasing" "$(jpy "$E1" "d['ids_increasing']")" true
expect_eq "(b) before the kill: progress counters never decrease" "$(jpy "$E1" "d['counters_monotonic']")" true
[[ $(jpy "$E1" "d['ids_increasing'] and d['counters_monotonic']") == true ]] || echo "     (b) $(jpy "$E1" "d['problems']")"
mx=$(jpy "$E1" "d['max_appended']")
[[ $mx =~ ^[0-9]+$ ]] && ((mx > 0 && mx < N_ALICE)) && pass "(b) the events showed progress before the kill (up to $mx appended)" ||
  fail "(b) the events before the kill show appended up to '$mx'"
[[ $(jpy "$E1" "d['last_event']") != end ]] && pass "(b) the first stream was cut by the kill (no end event): $(jpy "$E1" "d['closed']" | head -c 80)" ||
  fail "(b) the first stream ended with an end event before the kill"
expect_eq "(b) after the restart: the stream ends with event: end, state done" "$(jpy "$E2" "[d['last_event'], d['last_data']['state']]")" '["end", "done"]'
expect_eq "(b) after the restart: ids strictly increasing, counters never decrease" "$(jpy "$E2" "[d['ids_increasing'], d['counters_monotonic']]")" "[true, true]"
echo "     (b) ids before the kill: $(jpy "$E1" "d['ids'][:3] + ['...'] + d['ids'][-3:]"), after: $(jpy "$E2" "d['ids'][:3] + ['...'] + d['ids'][-3:]")"
# a finished job takes no more requests
codes=""
for a in cancel pause resume; do
  api "$T_OPER" POST "/api/v1/jobs/$AJ/$a"
  codes+="$a:$API_STATUS "
done
expect_eq "(d) cancel/pause/resume of a done job" "$codes" "cancel:409 pause:409 resume:409 "
part_done "a+b"

########################################################################################
# (d) two clients at once; wrong password; Dovecot down
########################################################################################

# jobs_agree ID: GET /jobs/ID, GET /jobs?kind=restore and a fresh event stream agree.
jobs_agree() {
  local id=$1 s1 s2 s3
  job_get "$id"
  s1=$(jpy "$JOB" "d['state']")
  api "$T_OPER" GET "/api/v1/jobs?kind=restore"
  s2=$(jpy "$API_BODY" "[j['state'] for j in d['jobs'] if j['id']=='$id'][0]")
  api "$T_OPER" GET "/api/v1/jobs?kind=restore&state=$s1"
  s3=$(jpy "$API_BODY" "'$id' in [j['id'] for j in d['jobs']]")
  tool events --url "$BASE/api/v1/jobs/$id/events" --token "$T_ADMIN" --out "$work/ev-$id.jsonl" --timeout 10 >/dev/null 2>&1
  s4=$(jpy "$(tool events-check "$work/ev-$id.jsonl")" "[d['last_event'], d['last_data']['state']]")
  expect_eq "(d) $2: GET, the list, ?state=$s1 and the event stream agree" "$s1|$s2|$s3|$s4" "$s1|$s1|true|[\"end\", \"$s1\"]"
}

# --- bob: pause/resume from two clients at once, then done, each once
post_restore "$T_ADMIN" '{"target":"primary","users":["bob@example.test"],"bandwidth":60000,"batch":5}'
expect_eq "(d) bob's restore: 202" "$API_STATUS" 202
BJ=$JOB_ID
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
  job_get "$BJ"
  [[ $(jpy "$JOB" "d['state'] == 'running' and d['progress'].get('appended', 0) > 0") == true ]] && break
  sleep 0.2
done
S=$(tool storm --base "$BASE" --tokens "$T_ADMIN,$T_OPER" --job "$BJ" --count 20 --actions pause,resume 2>&1)
bad=$(jpy "$S" "[r for r in d['results'] if r['status'] not in (200, 409)][:3]")
echo "     (d) bob, two clients: $(jpy "$S" "d['statuses']")"
[[ $bad == "[]" ]] && pass "(d) bob: every answer to the concurrent requests is 200 or 409" || fail "(d) bob: answers other than 200/409: $bad"
ncancel=$(jpy "$S" "sum(1 for r in d['results'] if r['action']=='cancel' and r['status']==200)")
if wait_job "$BJ" "done|failed|cancelled|paused" 90; then
  echo "     (d) bob settled: $JOB_STATE (requested '$(jpy "$JOB" "d.get('requested')")')"
  if ((ncancel > 0)); then
    expect_eq "(d) bob: a cancel was accepted (200), so the job ends cancelled" "$JOB_STATE" cancelled
  fi
  jobs_agree "$BJ" "bob after the storm"
  if [[ $JOB_STATE == paused ]]; then
    api "$T_OPER" POST "/api/v1/jobs/$BJ/resume"
    expect_eq "(d) bob: resume of the paused job" "$API_STATUS" 200
    wait_job "$BJ" "done|failed|cancelled|paused" 90
  fi
  if ((ncancel == 0)); then
    expect_eq "(d) bob: done after the storm (and a resume if it ended paused)" "$JOB_STATE" "done"
    dv_verify "(d) bob's INBOX holds each of the ${#B_SET[@]} files exactly once" bob@example.test INBOX "${B_SET[@]}"
  fi
else
  fail "(d) bob: the job did not settle within 90 s: $(head -c 400 <<<"$JOB")"
fi

echo "     (d) bob took $((SECONDS - part_t)) s"
# --- erin: cancel/pause/resume from two clients at once
post_restore "$T_ADMIN" '{"target":"primary","users":["erin@example.test"],"bandwidth":60000,"batch":5}'
expect_eq "(d) erin's restore: 202" "$API_STATUS" 202
EJ=$JOB_ID
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
  job_get "$EJ"
  [[ $(jpy "$JOB" "d['state'] == 'running' and d['progress'].get('appended', 0) > 0") == true ]] && break
  sleep 0.2
done
S=$(tool storm --base "$BASE" --tokens "$T_ADMIN,$T_OPER" --job "$EJ" --count 15 --actions pause,resume,pause,resume,cancel 2>&1)
echo "     (d) erin, two clients: $(jpy "$S" "d['statuses']")"
bad=$(jpy "$S" "[r for r in d['results'] if r['status'] not in (200, 409)][:3]")
[[ $bad == "[]" ]] && pass "(d) erin: every answer to the concurrent cancel/pause/resume is 200 or 409" || fail "(d) erin: answers other than 200/409: $bad"
ncancel=$(jpy "$S" "sum(1 for r in d['results'] if r['action']=='cancel' and r['status']==200)")
if wait_job "$EJ" "done|failed|cancelled|paused" 90; then
  if ((ncancel > 0)); then
    [[ $JOB_STATE == cancelled ]] && pass "(d) erin: $ncancel cancel(s) answered 200, the job ended cancelled" ||
      fail "(d) erin: $ncancel cancel(s) answered 200 but the job ended '$JOB_STATE' (requests in order: $(jpy "$S" "[(r['client'], r['action'], r['status'], r.get('state'), r.get('requested')) for r in d['results']][-12:]"))"
  else
    [[ $JOB_STATE =~ ^(paused|done)$ ]] && pass "(d) erin: no cancel accepted; the job ended $JOB_STATE" || fail "(d) erin: no cancel accepted, yet the job is $JOB_STATE"
  fi
  jobs_agree "$EJ" "erin after the storm"
  if [[ $JOB_STATE == cancelled ]]; then
    codes=""
    for a in resume pause cancel; do
      api "$T_ADMIN" POST "/api/v1/jobs/$EJ/$a"
      codes+="$a:$API_STATUS "
    done
    expect_eq "(d) erin: resume/pause/cancel of the cancelled job" "$codes" "resume:409 pause:409 cancel:409 "
  fi
  out=$(imap_tool --port "$DP" --user erin@example.test --password "$MV_DOVECOT_USER_PASS" \
    verify --match delivered --ignore-header X-Mailvault-Restore "${E_SET[@]}" 2>&1)
  expect_eq "(d) erin's INBOX: no duplicate, nothing unexpected ($(jpy "$out" "d['found']") of ${#E_SET[@]} there)" \
    "$(jpy "$out" "[d['duplicates'], d['unexpected']]")" "[{}, []]"
else
  fail "(d) erin: the job did not settle within 90 s: $(head -c 400 <<<"$JOB")"
fi

echo "     (d) bob and erin took $((SECONDS - part_t)) s"
# --- carol: the target's auth file has a wrong password
post_restore "$T_OPER" '{"target":"badpass","users":["carol@example.test"]}'
expect_eq "(d) carol's restore (wrong password in the target's auth file): 202" "$API_STATUS" 202
CJ=$JOB_ID
if wait_job "$CJ" "done|failed|cancelled|paused" 60; then
  expect_eq "(d) wrong password: the job ends failed" "$JOB_STATE" failed
  err=$(jpy "$JOB" "d.get('error', '')")
  [[ $err == *carol@example.test* ]] && pass "(d) wrong password: the error names the login: $(head -c 160 <<<"$err")" ||
    fail "(d) wrong password: the error does not name the login carol@example.test: '$err'"
else
  fail "(d) wrong password: the job is still '$JOB_STATE' after 60 s"
fi
n=$(dv_count carol@example.test)
[[ $n == none || $n == 0 ]] && pass "(d) wrong password: nothing appended for carol" || fail "(d) wrong password: carol's INBOX holds $n"

echo "     (d) bob, erin and carol took $((SECONDS - part_t)) s"
# --- dave: Dovecot down when the job starts (the job retries for about a minute before it
#     fails; part (e) runs meanwhile), up again, POST resume
dovecot_stop "$DV" >/dev/null 2>&1 || fail "(d) dovecot_stop"
post_restore "$T_OPER" '{"target":"primary","users":["dave@example.test"]}'
expect_eq "(d) dave's restore with Dovecot down: 202" "$API_STATUS" 202
DJ=$JOB_ID
d_dave=$SECONDS
part_done d

########################################################################################
# (e) the control socket
########################################################################################

P=$(tool uid-probe --sock "$sock" --uid 65534)
if [[ $(jpy "$P" "d.get('errno')") == 13 ]]; then
  pass "(e) uid 65534 cannot connect to the control socket: $(jpy "$P" "d['connect_error']")"
else
  [[ $(jpy "$P" "d.get('stdout_bytes', 0) == 0 and d.get('exit') in (None, '77')") == true ]] &&
    pass "(e) uid 65534 connected but ran nothing: $P" || fail "(e) uid 65534 on the control socket: $P"
fi
out=$(setpriv --reuid 65534 --regid 65534 --clear-groups "$MV" --vault "$V" --key-file "$K" stats --json 2>&1)
rc=$?
((rc != 0)) && [[ $out != *'"messages"'* ]] && pass "(e) \`mailvault stats\` as uid 65534: exit $rc, nothing shown ($(head -c 120 <<<"$out" | tr '\n' ' '))" ||
  fail "(e) \`mailvault stats\` as uid 65534: exit $rc: $(head -c 200 <<<"$out")"
# A socket uid 65534 can reach: a hard link of the same socket in an open directory, the
# socket's mode opened for the moment. The peer-credential check alone must refuse it.
mkdir -p "$work/alias/run" && chmod 755 "$work/alias" "$work/alias/run"
if ln "$sock" "$work/alias/run/control.sock" 2>/dev/null; then
  chmod 666 "$sock"
  P=$(tool uid-probe --sock "$work/alias/run/control.sock" --uid 65534)
  # ten times: the command must be refused each time (exit 77), never run, never fall back
  cli_rcs="" cli_ran=0
  for i in 1 2 3 4 5 6 7 8 9 10; do
    out=$(setpriv --reuid 65534 --regid 65534 --clear-groups "$MV" --vault "$work/alias" --key-file "$K" stats --json 2>&1)
    rc=$?
    cli_rcs+="$rc "
    [[ $out == *'"messages"'* ]] && cli_ran=$((cli_ran + 1))
    [[ $rc == 77 ]] || cli_other=$out
  done
  chmod 600 "$sock"
  rm -f "$work/alias/run/control.sock"
  [[ $(jpy "$P" "d.get('stdout_bytes', 0) == 0 and d.get('exit') in (None, '77')") == true ]] &&
    pass "(e) uid 65534 on a reachable socket: nothing run (exit frame $(jpy "$P" "d.get('exit')"), $(jpy "$P" "d.get('error')"))" ||
    fail "(e) uid 65534 on a reachable socket: $P"
  [[ $(jpy "$P" "d.get('exit')") == 77 ]] || echo "     (e) note: the raw client saw no exit frame: $(jpy "$P" "[d.get('error'), d.get('send_error')]")"
  ((cli_ran == 0)) && pass "(e) \`mailvault stats\` as uid 65534 on a reachable socket, 10 times: nothing run (exits: $cli_rcs)" ||
    fail "(e) \`mailvault stats\` as uid 65534 on a reachable socket ran $cli_ran times"
  [[ $cli_rcs == "77 77 77 77 77 77 77 77 77 77 " ]] &&
    pass "(e) ... refused each time by the service (exit 77: $(head -c 100 <<<"$out" | tr '\n' ' '))" ||
    fail "(e) \`mailvault stats\` as uid 65534 on a reachable socket: exits $cli_rcs, not always the service's refusal (77); otherwise: $(head -c 200 <<<"${cli_other:-}" | tr '\n' ' ')"
else
  fail "(e) cannot hard-link the control socket for the reachable-socket check"
fi
expect_eq "(e) the socket's mode is back to 0600" "$(stat -c %a "$sock")" 600

H=$(tool socket-hostile --sock "$sock" --cmd "timeout -s KILL 30 '$MV' --vault '$V' --key-file '$K' stats --json")
secs=$(jpy "$H" "d['cmd']['seconds']")
if [[ $(jpy "$H" "d['cmd']['rc'] == 0 and json.loads(d['cmd']['stdout'])['messages'] >= $N_ALL") == true ]]; then
  pass "(e) stats while an idle, a garbage and a 10 MiB client hold connections: exit 0 in $secs s"
else
  fail "(e) stats beside the hostile clients: $(jpy "$H" "d['cmd']")"
fi
[[ $(jpy "$H" "d['cmd']['seconds'] < 5") == true ]] || fail "(e) stats beside the hostile clients took $secs s"
echo "     (e) idle client: $(jpy "$H" "[d['idle'].get('exit'), d['idle'].get('seconds'), d['idle'].get('error')]"), garbage: $(jpy "$H" "[d['garbage'].get('exit'), d['garbage'].get('seconds')]"), 10 MiB: $(jpy "$H" "[d['big'].get('exit'), d['big'].get('sent'), d['big'].get('seconds'), d['big'].get('send_error')]")"
[[ $(jpy "$H" "d['idle'].get('error') is None and d['idle'].get('seconds', 99) < 13") == true ]] &&
  pass "(e) the idle client was dropped after $(jpy "$H" "d['idle']['seconds']") s (exit frame $(jpy "$H" "d['idle'].get('exit')"))" ||
  fail "(e) the idle client was not dropped within 13 s: $(jpy "$H" "d['idle']")"
[[ $(jpy "$H" "d['garbage'].get('stdout_bytes', 1) == 0 and d['garbage'].get('seconds', 99) < 5") == true ]] &&
  pass "(e) the garbage client ran nothing and was dropped at once (exit frame $(jpy "$H" "d['garbage'].get('exit')"))" ||
  fail "(e) the garbage client: $(jpy "$H" "d['garbage']")"
[[ $(jpy "$H" "d['big'].get('stdout_bytes', 1) == 0 and d['big'].get('sent', 1 << 30) < (10 << 20) and d['big'].get('seconds', 99) < 5") == true ]] &&
  pass "(e) the 10 MiB client ran nothing and was cut off after $(jpy "$H" "d['big']['sent']") bytes" ||
  fail "(e) the 10 MiB client: $(jpy "$H" "{k: v for k, v in d['big'].items() if k != 'frames'}")"
# Beyond one idle client: many at once (each holds one of the service's command slots until
# its 10 s are up). A command must still be answered, or at least be told the service is busy.
H=$(tool socket-idle-many --sock "$sock" --n 20 --cmd "timeout -s KILL 30 '$MV' --vault '$V' --key-file '$K' stats --json")
if [[ $(jpy "$H" "d['rc'] == 0 and d['seconds'] < 5 and json.loads(d['stdout'])['messages'] >= $N_ALL") == true ]]; then
  pass "(e) stats while 20 idle clients hold connections: exit 0 in $(jpy "$H" "d['seconds']") s"
else
  fail "(e) stats while 20 idle clients hold connections ($(jpy "$H" "d['connected']") connected): exit $(jpy "$H" "d['rc']") in $(jpy "$H" "d['seconds']") s: $(jpy "$H" "d['stderr']" | head -c 200)"
fi
mv__pid_alive "$serve_pid" && pass "(e) serve is still up" || fail "(e) serve died: $(tail -n 5 "$work/serve.log" | tr '\n' ' ')"
out=$(mvault stats --json 2>&1)
[[ $? == 0 ]] && pass "(e) stats answers afterwards" || fail "(e) stats afterwards: $(head -c 200 <<<"$out")"
part_done e

########################################################################################
# (d) dave, continued
########################################################################################

if wait_job "$DJ" "done|failed|cancelled|paused" 120; then
  expect_eq "(d) Dovecot down: the job ends failed ($((SECONDS - d_dave)) s after it started)" "$JOB_STATE" failed
  err=$(jpy "$JOB" "d.get('error', '')")
  [[ -n $err ]] && pass "(d) Dovecot down: a reason: $(head -c 160 <<<"$err")" || fail "(d) Dovecot down: failed without a reason"
else
  fail "(d) Dovecot down: the job is still '$JOB_STATE' after 120 s: $(head -c 300 <<<"$JOB")"
fi
dovecot_restart "$DV" >/dev/null 2>&1 || fail "(d) Dovecot did not start again"
api "$T_OPER" POST "/api/v1/jobs/$DJ/resume"
expect_eq "(d) POST /jobs/{id}/resume of the failed job, Dovecot up again: 200" "$API_STATUS" 200
if wait_job "$DJ" "done|failed|cancelled|paused" 90; then
  expect_eq "(d) after the resume: done" "$JOB_STATE" "done"
else
  fail "(d) after the resume the job is still '$JOB_STATE' after 90 s"
fi
dv_verify "(d) dave's INBOX holds each of the ${#D_SET[@]} files exactly once" dave@example.test INBOX "${D_SET[@]}"
part_done "d, dave"

########################################################################################
# (t) tag: everywhere: a reviewer's tags (the records) reach the index, so the command
#     line's search, which reads the index alone, finds them; after a reindex too (below)
########################################################################################

part_t=$SECONDS
tag_id=$(mvault list --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
api "$T_REV" PUT "/api/v1/messages/$tag_id/tags/svc-held"
expect_eq "(t) a reviewer tags a message" "$API_STATUS" 204
n=$(wait_count 'tag:svc-held' 1)
expect_eq "(t) \`mailvault count tag:svc-held\` (the index alone) finds the tagged message" "$n" 1
got=$(jpy "$("$MV" --vault "$V" --key-file "$K" search --json 'tag:svc-held' 2>/dev/null)" "[h['id'] for h in d['results']]")
expect_eq "(t) ... and it is that message" "$got" "[\"$tag_id\"]"
api "$T_REV" DELETE "/api/v1/messages/$tag_id/tags/svc-held"
n=$(wait_count 'tag:svc-held' 0)
expect_eq "(t) the tag removed: count tag:svc-held is 0" "$n" 0
api "$T_REV" PUT "/api/v1/messages/$tag_id/tags/svc-kept"
expect_eq "(t) a second tag" "$API_STATUS" 204
# (c), continued: an import run through the service is one of its jobs.
printf 'From: z@example.test\nTo: zed@example.test\nSubject: imported through serve\nMessage-ID: <svc-import@example.test>\n\nbody\n' >"$work/svc-import.eml"
out=$(mvault import -q --custodian zed@example.test "$work/svc-import.eml" 2>&1)
expect_eq "(c) import through the service: exit 0, one new message" "$(grep -c '^imported 1 new messages' <<<"$out")" 1
api "$T_ADMIN" GET "/api/v1/jobs?kind=import"
expect_eq "(c) the import through the service is a job: GET /api/v1/jobs?kind=import lists it, done" \
  "$(jpy "$API_BODY" "sorted({j['state'] for j in d['jobs']})")" '["done"]'
echo "     (t) took $((SECONDS - part_t)) s"

########################################################################################
# (p) policies through the running service: a set put in force from the command line; a tag
#     policy tags mail captured over SMTP within seconds (found by the command line's search,
#     which reads the index alone); what-if's numbers against counts of the index; explain of
#     a held message; a hold placed and released; the audit trail names the shell user
########################################################################################

part_t=$SECONDS
cat >"$work/policies.json" <<'JSON'
[
  {"name": "everything-1y", "kind": "retention", "keep": "365d"},
  {"name": "alice-case", "kind": "hold", "case": "svc-1", "custodians": ["alice@example.test"]},
  {"name": "probe-tag", "kind": "tag", "tag": "svc-probe", "query": "subject:\"policy capture probe\""}
]
JSON
out=$(mvault policy set "$work/policies.json" 2>&1)
[[ $out =~ ^policy\ set\ version\ 1\ in\ force:\ 3\ policies ]] && pass "(p) \`policy set\` through the service: '$out'" ||
  fail "(p) policy set through the service: '$out'"
python3 - "$SP" <<'PY' || fail "(p) the SMTP probe was not accepted"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.sendmail("probe@example.test", ["bob@example.test"],
           b"From: probe@example.test\r\nTo: bob@example.test\r\nSubject: policy capture probe\r\n"
           b"Message-ID: <svc-policy-probe@example.test>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nprobe\r\n")
s.quit()
PY
n=$(wait_count 'tag:svc-probe' 1)
expect_eq "(p) a message captured over SMTP is tagged by the tag policy: \`count tag:svc-probe\` (the index alone)" "$n" 1
# SMTP capture goes on meanwhile: the index's own count of every message, before and after,
# brackets the what-if's.
alice=$("$MV" --vault "$V" --key-file "$K" count 'custodian:alice@example.test' 2>/dev/null)
before=$("$MV" --vault "$V" --key-file "$K" count '*' 2>/dev/null)
wi=$(mvault policy what-if "$work/policies.json" --json 2>/dev/null)
after=$("$MV" --vault "$V" --key-file "$K" count '*' 2>/dev/null)
expect_eq "(p) what-if: held = alice's messages as the index counts them; every message has one outcome; all the index holds ($before..$after)" \
  "$(jpy "$wi" "[d['held'], d['by_policy']['alice-case']['held'], d['purgeable'] + d['held'] + d['kept'] + d['review'] == d['messages'], $before <= d['messages'] <= $after]")" \
  "[$alice, $alice, true, true]"
expect_eq "(p) what-if against the same set in force changes nothing" \
  "$(jpy "$wi" "sorted(set(d['changes'].values()))")" "[0]"
aid=$(sha256sum "${A_SET[0]}" | cut -d' ' -f1)
expect_eq "(p) \`policy explain\` of one of alice's messages: held by alice-case" \
  "$(jpy "$(mvault policy explain "$aid" --json)" "[d['outcome'], d['holds']]")" '["held", ["alice-case"]]'
out=$(mvault hold place svc-bob --case svc-2 --custodian bob@example.test 2>&1)
api "$T_ADMIN" GET /api/v1/holds
expect_eq "(p) \`hold place\` through the service; GET /api/v1/holds (admin) lists both holds" \
  "$(jpy "$API_BODY" "sorted(h['name'] for h in d['holds'])")" '["alice-case", "svc-bob"]'
mvault hold release svc-bob >/dev/null 2>&1
expect_eq "(p) \`hold release\`: one hold left" "$(jpy "$(mvault hold list --json)" "[h['name'] for h in d]")" '["alice-case"]'
expect_eq "(p) the audit trail: policy.set, hold.place, hold.release by the shell user" \
  "$(for a in policy.set hold.place hold.release; do mvault audit list --action "$a" --json 2>/dev/null; done |
    python3 -c 'import json, sys; print(sorted({(e["action"], e["user"]) for e in map(json.loads, filter(str.strip, sys.stdin))}))')" \
  "$(python3 -c "print(sorted([('hold.place', '$(id -un)'), ('hold.release', '$(id -un)'), ('policy.set', '$(id -un)')]))")"
echo "     (p) took $((SECONDS - part_t)) s"

########################################################################################
# (z) stop; every acknowledged message is in the vault
########################################################################################

kill -TERM "$smtp_pid"
wait_pid "$smtp_pid" 20 || fail "(z) the SMTP client did not stop"
smtp_pid=""
echo "     (z) SMTP client: $(tail -n 1 "$work/smtp-load.out")"
kill -TERM "$serve_pid"
if wait_pid "$serve_pid" 60; then
  wait "$serve_pid" 2>/dev/null
  grep -q "stopped cleanly" "$work/serve.log" && pass "(z) SIGTERM: serve stopped cleanly" || fail "(z) serve did not say it stopped cleanly"
else
  fail "(z) serve still ran 60 s after SIGTERM (killed)"
fi
serve_pid=""
res=$(python3 - "$work/acked.log" <("$MV" --vault "$V" --key-file "$K" list --json) <<'PY'
import json, sys
acked = [l.strip().lower() for l in open(sys.argv[1]) if l.strip()]
stored = {(m.get("message_id") or "").strip().lower() for m in json.load(open(sys.argv[2]))}
missing = [a for a in acked if a not in stored]
print(json.dumps({"acked": len(acked), "missing": len(missing), "first_missing": missing[:3]}))
PY
)
n_ack=$(jpy "$res" "d['acked']")
[[ $(jpy "$res" "d['missing'] == 0 and d['acked'] > 0") == true ]] &&
  pass "(z) all $n_ack messages acknowledged over SMTP (250) are in the vault (list --json, stopped)" ||
  fail "(z) acknowledged messages missing from the vault: $res"
part_done z

# (t), continued: the index rebuilt from the vault and the records keeps the tag.
mvault reindex -q >/dev/null 2>&1 || fail "(t) reindex"
expect_eq "(t) after reindex, count tag:svc-kept is 1" "$("$MV" --vault "$V" --key-file "$K" count 'tag:svc-kept' 2>/dev/null)" 1

echo "     $((SECONDS - t_start)) s"
((failures)) && { echo "$failures check(s) failed"; exit 1; }
echo "all service checks passed"
