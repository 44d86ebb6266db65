#!/usr/bin/env bash
# End-to-end test of `mailvault restore` (issue 7) against real IMAP servers on 127.0.0.1: a
# private Dovecot (IMAP + LMTP) and a private Cyrus IMAP (tests/recovery/servers.sh). Every
# result is checked from the server's side with tests/recovery/imap_tool.py (count, and
# verify --match delivered: each expected file exactly once, copies whose trace headers or
# transfer encodings differ included), never by believing mailvault's own report.
#
#   a  Dovecot: 120 corpus messages + the make_fixtures.py edge cases imported for alice;
#      half of them, plus one of each look-alike pair, already delivered over LMTP (so their
#      headers differ), the multipart fixture delivered re-encoded. --dry-run plans
#      present = the pre-delivered ones and appends nothing; the run fills INBOX (each file
#      exactly once) and Sent (the mail alice sent); a second run appends nothing.
#   b  the same against Cyrus, pre-delivered by APPEND with trace headers prepended, restored
#      with the admin identity (SASL PLAIN authzid). Sent on Cyrus is INBOX/Sent (a user
#      may not create top-level mailboxes there).
#   c  capture-time window: batches A, B, C imported seconds apart; --from T1 --until T2
#      with zero margins restores exactly B.
#   d  --folder "Recovered 2026": created, holds the set; INBOX untouched.
#   e  wrong password, wrong admin password, an auth file not 0600: non-zero exit, a message
#      naming the login (or the file), nothing appended.
#   f  Dovecot quota: only part fits -> exit 1, quota failures in the report, status failed,
#      what fits is there exactly once; quota raised, `job resume` -> all exactly once.
#   g  kill -9 of a 300-message restore (--workers 1) at random moments, three times, each
#      time resumed through `job list --json` / `job resume`: exactly once, no duplicate.
#   h  Dovecot killed and restarted while a 300-message restore runs (its connection cut):
#      the job rides it out (reconnects), or ends interrupted
#      and `job resume` finishes it; exactly once.
#   i  --into one reviewer mailbox, and --map of two users onto another: the union, once.
#
# usage: tests/recovery/restore_test.sh PATH_TO_mailvault   (as root; ctest passes
#        $<TARGET_FILE:mailvault>). Needs dovecot-imapd/-lmtpd, Cyrus
#        (tests/recovery/install-cyrus.sh) and the corpus ($MAILVAULT_CORPUS, default
#        ~/.cache/mailvault/corpus/maildir). Prints "ok   ..." / "FAIL ..." lines; exit 1 on
#        any FAIL, and the work directory is kept then (MV_KEEP=1 keeps it always).
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

(($# == 1)) || { echo "usage: $0 PATH_TO_mailvault" >&2; exit 2; }
MV=$(realpath "$1")
[[ -x $MV ]] || { echo "FAIL $1 is not an executable" >&2; exit 2; }
corpus=$(test_corpus)
[[ -d $corpus/cur ]] || { echo "FAIL no corpus at $corpus/cur (scripts/fetch-corpus.sh)" >&2; exit 2; }

work=$(mktemp -d /tmp/mv-restore.XXXXXX)
chmod 755 "$work"
DV=$work/dv CY=$work/cy V=$work/vault K=$work/key
bgpids=()
cleanup() {
  local p
  for p in "${bgpids[@]}"; do kill -9 "$p" 2>/dev/null; done
  dovecot_stop "$DV" >/dev/null 2>&1
  cyrus_stop "$CY" >/dev/null 2>&1
  keep_or_remove_work "kept $work" MV_KEEP
}
trap cleanup EXIT
t_start=$SECONDS

########################################################################################
# Helpers
########################################################################################

# mvault ARGS...: mailvault on the test vault, killed if it hangs (this script's own, not lib.sh's).
mvault() { timeout -s KILL "${MV_RESTORE_TIMEOUT:-120}" "$MV" --vault "$V" --key-file "$K" "$@"; }

# Auth files ("ADDRESS LOGIN PASSWORD" or "* LOGIN PASSWORD"): write_auth (lib.sh). JSON: jpy.

# Report fields (the restore/job report of the spec): entry of USER's FOLDER, or totals.
mbox_field() { jpy "$1" "[m for m in d['mailboxes'] if m['folder']=='$3' and '$2' in (m['user'], m['mailbox'])][0]['$4']"; }
plan_field() { jpy "$1" "[m for m in d['plan'] if m['folder']=='$3' and '$2' in (m['user'], m['mailbox'])][0]['$4']"; }
total() { jpy "$1" "d['totals']['$2']"; }

# job_ids: every job id `job list --json` knows (an array of reports, or {"jobs": [...]}).
job_ids() {
  mvault job list --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
for j in (d.get("jobs", []) if isinstance(d, dict) else d):
    print(j.get("job", j.get("id")))' 2>/dev/null
}
# new_job BEFORE_IDS: the id listed now that was not in BEFORE_IDS (newline-separated).
new_job() { comm -13 <(sort <<<"$1") <(job_ids | sort) | tail -n 1; }
job_status() { jpy "$(mvault job show "$1" --json 2>/dev/null)" "d['status']"; }

# The oracle. dv_verify / cy_verify LABEL USER FOLDER FILE... (ignores a restore marker).
verify_with() {
  local label=$1 out
  shift 1
  out=$(imap_tool "$@" 2>&1)
  if [[ $? == 0 ]]; then
    pass "$label"
  else
    fail "$label: $(jpy "$out" "{k: d[k] for k in ('expected','found','missing','duplicates','unexpected')}" || echo "$out")"
  fi
  LAST_VERIFY=$out
}
dv_verify() {
  local label=$1 user=$2 folder=$3
  shift 3
  verify_with "$label" --port "$DP" --user "$user" --password "$MV_DOVECOT_USER_PASS" \
    verify --match delivered --ignore-header X-Mailvault-Restore --folder "$folder" "$@"
}
cy_verify() {
  local label=$1 user=$2 folder=$3
  shift 3
  verify_with "$label" --port "$CP" --user "$MV_CYRUS_ADMIN" --password "$MV_CYRUS_ADMIN_PASS" --authzid "$user" \
    verify --match delivered --ignore-header X-Mailvault-Restore --folder "$folder" "$@"
}
# dv_count USER [FOLDER]: messages in FOLDER as IMAP STATUS reports them ("none" if it fails,
# e.g. the folder does not exist).
dv_count() {
  local r
  r=$(imap_tool --port "$DP" --user "$1" --password "$MV_DOVECOT_USER_PASS" count --folder "${2:-INBOX}" 2>/dev/null) || { echo none; return; }
  jpy "$r" "d['messages']"
}
cy_count() {
  local r
  r=$(imap_tool --port "$CP" --user "$MV_CYRUS_ADMIN" --password "$MV_CYRUS_ADMIN_PASS" --authzid "$1" \
    count --folder "${2:-INBOX}" 2>/dev/null) || { echo none; return; }
  jpy "$r" "d['messages']"
}
# restore ARGS...: `mailvault restore --to imap://127.0.0.1:$DP --no-tls ARGS... --json`;
# stdout in $OUT, stderr in $ERR_FILE, exit status in $RC.
restore_dv() {
  OUT=$(mvault restore --to "imap://127.0.0.1:$DP" --no-tls "$@" --json 2>"$work/restore.err")
  RC=$? ERR_FILE=$work/restore.err
}
restore_cy() {
  OUT=$(mvault restore --to "imap://127.0.0.1:$CP" --no-tls "$@" --json 2>"$work/restore.err")
  RC=$? ERR_FILE=$work/restore.err
}
show_err() { tail -n 3 "$ERR_FILE" 2>/dev/null | tr '\n' ' '; }
# says FILE|OUT TEXT: true when TEXT is in $ERR_FILE or in $OUT.
says() { grep -qF -- "$1" "$ERR_FILE" 2>/dev/null || grep -qF -- "$1" <<<"$OUT"; }

# bg_mailvault OUTFILE ARGS...: mailvault (itself, no wrapper, so that kill -9 $BG_PID hits
# it) in the background, stdout and stderr to OUTFILE; its pid in BG_PID.
bg_mailvault() {
  local out=$1
  shift
  "$MV" --vault "$V" --key-file "$K" "$@" >"$out" 2>&1 &
  BG_PID=$!
  bgpids+=("$BG_PID")
}
# wait_gone PID SECONDS: waits for PID to exit (true), or kills it after SECONDS (false).
wait_gone() {
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -9 "$1" 2>/dev/null
      wait "$1" 2>/dev/null
      return 1
    fi
    sleep 0.05
  done
  wait "$1" 2>/dev/null
  BG_RC=$?
  return 0
}

########################################################################################
# Input: fixtures and a corpus sample (unique Message-IDs, no bare CR or NUL, < 32 KB),
# cut into disjoint slices, one per user.
########################################################################################

python3 "$here/make_fixtures.py" "$work/fx" >/dev/null || { fail "make_fixtures.py"; exit 1; }
FX=$work/fx
mapfile -t picks < <(python3 - "$corpus/cur" 885 <<'PY'
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
((${#picks[@]} == 885)) || { fail "corpus sample: ${#picks[@]} usable messages, want 885"; exit 1; }
A_CORPUS=("${picks[@]:0:120}")                         # alice (a, b)
W_A=("${picks[@]:120:10}") W_B=("${picks[@]:130:10}") W_C=("${picks[@]:140:10}")  # wendy (c)
F_SET=("${picks[@]:150:20}")                           # frank (d)
G_SET=("${picks[@]:170:5}")                            # grace (e)
H_SET=("${picks[@]:175:60}")                           # henry (f)
I_SET=("${picks[@]:235:300}")                          # ivan (g)
J_SET=("${picks[@]:535:300}")                          # judy (h)
K_SET=("${picks[@]:835:25}") L_SET=("${picks[@]:860:25}")  # kate, leo (i)
# alice: INBOX gets the corpus slice and every fixture but sent.eml, which goes to Sent.
A_INBOX=("${A_CORPUS[@]}" "$FX/nomid-1.eml" "$FX/nomid-2.eml" "$FX/samemid-1.eml" "$FX/samemid-2.eml" "$FX/reencode.eml")
# already in the mailbox before the restore: every other corpus message and one of each pair
A_PRE=()
for ((i = 0; i < 120; i += 2)); do A_PRE+=("${A_CORPUS[i]}"); done
A_PRE_PLAIN=("${A_PRE[@]}" "$FX/samemid-1.eml" "$FX/nomid-1.eml")
n_pre=$((${#A_PRE_PLAIN[@]} + 1))                      # + reencode.eml
n_rest=$((${#A_INBOX[@]} - n_pre))

########################################################################################
# Servers and the vault
########################################################################################

DP=$(free_port) LP=$(free_port) CP=$(free_port)
dovecot_imap_start "$DV" "$DP" "$LP" >/dev/null || { fail "Dovecot did not start"; exit 1; }
cyrus_ok=1
cyrus_start "$CY" "$CP" >/dev/null 2>&1 || { cyrus_ok=0; fail "Cyrus did not start (tests/recovery/install-cyrus.sh installs it)"; }

mvault init >/dev/null 2>&1 || { fail "mailvault init"; exit 1; }
import_for() {   # import_for CUSTODIAN FILE...
  local who=$1
  shift
  mvault import -q --custodian "$who" "$@" >"$work/import.out" 2>&1 ||
    fail "import for $who: $(tail -n 2 "$work/import.out" | tr '\n' ' ')"
}
# alice: the corpus slice and sent.eml with --custodian; the other fixtures without, so their
# custodian comes from To: alice@example.test
import_for alice@example.test "${A_CORPUS[@]}" "$FX/sent.eml"
mvault import -q "$FX/nomid-1.eml" "$FX/nomid-2.eml" "$FX/samemid-1.eml" "$FX/samemid-2.eml" "$FX/reencode.eml" >"$work/import.out" 2>&1 ||
  fail "import of the fixtures without --custodian: $(tail -n 2 "$work/import.out" | tr '\n' ' ')"
import_for frank@example.test "${F_SET[@]}"
import_for grace@example.test "${G_SET[@]}"
import_for henry@example.test "${H_SET[@]}"
import_for ivan@example.test "${I_SET[@]}"
import_for judy@example.test "${J_SET[@]}"
import_for kate@example.test "${K_SET[@]}"
import_for leo@example.test "${L_SET[@]}"

ADMIN_DV=$work/auth-dovecot-admin ADMIN_CY=$work/auth-cyrus-admin
write_auth "$ADMIN_DV" "* $MV_DOVECOT_MASTER_USER $MV_DOVECOT_MASTER_PASS"
write_auth "$ADMIN_CY" "* $MV_CYRUS_ADMIN $MV_CYRUS_ADMIN_PASS"
write_auth "$work/auth-alice" "alice@example.test alice@example.test $MV_DOVECOT_USER_PASS"
echo "     setup done in $((SECONDS - t_start)) s"

########################################################################################
# (a) Dovecot: pre-delivered half, dry run, run, second run
########################################################################################

imap_tool lmtp-deliver --lmtp-port "$LP" --rcpt alice@example.test "${A_PRE_PLAIN[@]}" >"$work/a-lmtp.log" &&
  imap_tool lmtp-deliver --lmtp-port "$LP" --rcpt alice@example.test --reencode "$FX/reencode.eml" >>"$work/a-lmtp.log" ||
  fail "(a) LMTP pre-delivery: $(grep -v '"OK"' "$work/a-lmtp.log" | head -n 2)"
dv_verify "(a) before: the $n_pre pre-delivered copies are in INBOX (trace headers, one re-encoded)" \
  alice@example.test INBOX "${A_PRE_PLAIN[@]}" "$FX/reencode.eml"
expect_eq "(a) before: the re-encoded copy matched by its decoded parts only" \
  "$(jpy "$LAST_VERIFY" "[f for _, f in d['by_parts']]")" "[\"$FX/reencode.eml\"]"

restore_dv --auth-file "$work/auth-alice" --users alice@example.test --dry-run
if ((RC == 0)); then
  expect_eq "(a) dry run: INBOX selected" "$(plan_field "$OUT" alice@example.test INBOX selected)" "${#A_INBOX[@]}"
  expect_eq "(a) dry run: INBOX present (pre-delivered)" "$(plan_field "$OUT" alice@example.test INBOX present)" "$n_pre"
  expect_eq "(a) dry run: INBOX to_append" "$(plan_field "$OUT" alice@example.test INBOX to_append)" "$n_rest"
  expect_eq "(a) dry run: Sent to_append" "$(plan_field "$OUT" alice@example.test Sent to_append)" 1
else
  fail "(a) dry run exited $RC: $(show_err)"
fi
expect_eq "(a) dry run appended nothing to INBOX" "$(dv_count alice@example.test)" "$n_pre"
n=$(dv_count alice@example.test Sent)
[[ $n == none || $n == 0 ]] && pass "(a) dry run appended nothing to Sent" || fail "(a) dry run: Sent holds $n"

restore_dv --auth-file "$work/auth-alice" --users alice@example.test
if ((RC == 0)); then pass "(a) restore exit 0"; else fail "(a) restore exited $RC: $(show_err)"; fi
expect_eq "(a) report: appended" "$(total "$OUT" appended)" "$((n_rest + 1))"
expect_eq "(a) report: status" "$(jpy "$OUT" "d['status']")" "done"
dv_verify "(a) INBOX holds each of the ${#A_INBOX[@]} files exactly once" alice@example.test INBOX "${A_INBOX[@]}"
dv_verify "(a) Sent holds the mail alice sent, once" alice@example.test Sent "$FX/sent.eml"

restore_dv --auth-file "$work/auth-alice" --users alice@example.test
((RC == 0)) || fail "(a) second run exited $RC: $(show_err)"
expect_eq "(a) second run: INBOX count unchanged" "$(dv_count alice@example.test)" "${#A_INBOX[@]}"
expect_eq "(a) second run: Sent count unchanged" "$(dv_count alice@example.test Sent)" 1
expect_eq "(a) second run: report appended" "$(total "$OUT" appended)" 0

########################################################################################
# (b) Cyrus, admin identity
########################################################################################

if ((cyrus_ok)); then
  cyrus_add_user "$CY" alice@example.test alice-pw >/dev/null || fail "(b) cyrus_add_user alice"
  trace=(--prepend-header "Return-Path: <list-owner@lists.example.test>"
    --prepend-header "Delivered-To: alice@example.test"
    --prepend-header "Received: from mx.example.test by cyrus.test with LMTPA; Tue, 3 Mar 2026 12:00:00 +0000")
  cy=(--port "$CP" --user "$MV_CYRUS_ADMIN" --password "$MV_CYRUS_ADMIN_PASS" --authzid alice@example.test)
  imap_tool "${cy[@]}" append "${trace[@]}" "${A_PRE_PLAIN[@]}" >"$work/b-append.log" &&
    imap_tool "${cy[@]}" append "${trace[@]}" --reencode "$FX/reencode.eml" >>"$work/b-append.log" ||
    fail "(b) APPEND pre-delivery: $(grep -v '"OK"' "$work/b-append.log" | head -n 2)"
  cy_verify "(b) before: the $n_pre pre-delivered copies are in INBOX" alice@example.test INBOX "${A_PRE_PLAIN[@]}" "$FX/reencode.eml"

  restore_cy --auth-file "$ADMIN_CY" --users alice@example.test --dry-run
  if ((RC == 0)); then
    expect_eq "(b) dry run: INBOX present" "$(plan_field "$OUT" alice@example.test INBOX present)" "$n_pre"
    expect_eq "(b) dry run: INBOX to_append" "$(plan_field "$OUT" alice@example.test INBOX to_append)" "$n_rest"
  else
    fail "(b) dry run exited $RC: $(show_err)"
  fi
  expect_eq "(b) dry run appended nothing" "$(cy_count alice@example.test)" "$n_pre"

  restore_cy --auth-file "$ADMIN_CY" --users alice@example.test
  if ((RC == 0)); then pass "(b) restore exit 0"; else fail "(b) restore exited $RC: $(show_err)"; fi
  cy_verify "(b) Cyrus INBOX holds each of the ${#A_INBOX[@]} files exactly once" alice@example.test INBOX "${A_INBOX[@]}"
  cy_verify "(b) Cyrus INBOX/Sent holds the mail alice sent, once" alice@example.test INBOX/Sent "$FX/sent.eml"
  restore_cy --auth-file "$ADMIN_CY" --users alice@example.test
  ((RC == 0)) || fail "(b) second run exited $RC: $(show_err)"
  expect_eq "(b) second run: INBOX count unchanged" "$(cy_count alice@example.test)" "${#A_INBOX[@]}"
fi

########################################################################################
# (c) capture-time window: exactly batch B
########################################################################################

# Whole seconds: each boundary is at least a second away from every capture time, so the
# result does not depend on whether --from/--until are inclusive.
import_for wendy@example.test "${W_A[@]}"
sleep 2
T1=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 1
import_for wendy@example.test "${W_B[@]}"
sleep 2
T2=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 1
import_for wendy@example.test "${W_C[@]}"
restore_dv --auth-file "$ADMIN_DV" --users wendy@example.test --from "$T1" --until "$T2" --margin-before 0s --margin-after 0s
((RC == 0)) || fail "(c) restore --from $T1 --until $T2 exited $RC: $(show_err)"
dv_verify "(c) window $T1..$T2: INBOX holds exactly batch B (10), nothing of A or C" wendy@example.test INBOX "${W_B[@]}"

########################################################################################
# (d) --folder into a folder that does not exist
########################################################################################

n=$(dv_count frank@example.test "Recovered 2026")
[[ $n == none ]] && pass "(d) \"Recovered 2026\" does not exist before" || fail "(d) \"Recovered 2026\" exists before ($n)"
restore_dv --auth-file "$ADMIN_DV" --users frank@example.test --folder "Recovered 2026"
((RC == 0)) || fail "(d) restore --folder exited $RC: $(show_err)"
dv_verify "(d) \"Recovered 2026\" created, holds the 20 exactly once" frank@example.test "Recovered 2026" "${F_SET[@]}"
expect_eq "(d) INBOX untouched" "$(dv_count frank@example.test)" 0

########################################################################################
# (e) wrong credentials, auth file mode
########################################################################################

write_auth "$work/auth-grace-bad" "grace@example.test grace@example.test wrong-password"
restore_dv --auth-file "$work/auth-grace-bad" --users grace@example.test
((RC != 0)) && pass "(e) wrong password: exit $RC" || fail "(e) wrong password: exit 0"
says grace@example.test && pass "(e) wrong password: the message names the login" ||
  fail "(e) wrong password: no mention of the login: $(show_err)"
write_auth "$work/auth-admin-bad" "* $MV_DOVECOT_MASTER_USER not-the-secret"
restore_dv --auth-file "$work/auth-admin-bad" --users grace@example.test
((RC != 0)) && pass "(e) wrong admin password: exit $RC" || fail "(e) wrong admin password: exit 0"
says "$MV_DOVECOT_MASTER_USER" && pass "(e) wrong admin password: the message names the login" ||
  fail "(e) wrong admin password: no mention of $MV_DOVECOT_MASTER_USER: $(show_err)"
cp "$ADMIN_DV" "$work/auth-open" && chmod 644 "$work/auth-open"
restore_dv --auth-file "$work/auth-open" --users grace@example.test
((RC != 0)) && pass "(e) auth file mode 0644 refused: exit $RC" || fail "(e) auth file mode 0644 accepted"
expect_eq "(e) nothing appended for grace" "$(dv_count grace@example.test)" 0

########################################################################################
# (f) quota: part fits, job failed; quota raised, job resume
########################################################################################

h_bytes=$(cat "${H_SET[@]}" | wc -c)
h_kb=$((h_bytes * 4 / 10 / 1024))
dovecot_set_quota "$DV" henry@example.test "$h_kb" || fail "(f) dovecot_set_quota"
restore_dv --auth-file "$ADMIN_DV" --users henry@example.test
expect_eq "(f) over quota: exit status" "$RC" 1
expect_eq "(f) over quota: job status" "$(jpy "$OUT" "d['status']")" failed
nq=$(jpy "$OUT" "sum(1 for m in d['mailboxes'] for f in m['failures'] if re.search('quota', f['why'], re.I))")
[[ $nq =~ ^[0-9]+$ ]] && ((nq > 0)) && pass "(f) over quota: $nq per-message failures name the quota" ||
  fail "(f) over quota: no failure names the quota: $(jpy "$OUT" "[f for m in d['mailboxes'] for f in m['failures']][:3]")"
hjob=$(jpy "$OUT" "d['job']")
LAST_VERIFY=$(imap_tool --port "$DP" --user henry@example.test --password "$MV_DOVECOT_USER_PASS" \
  verify --match delivered --ignore-header X-Mailvault-Restore "${H_SET[@]}" 2>&1)
got=$(jpy "$LAST_VERIFY" "d['found']") dups=$(jpy "$LAST_VERIFY" "d['duplicates']") unexp=$(jpy "$LAST_VERIFY" "d['unexpected']")
if [[ $got =~ ^[0-9]+$ ]] && ((got > 0 && got < ${#H_SET[@]})) && [[ $dups == "{}" && $unexp == "[]" ]]; then
  pass "(f) over quota: the $got that fit ($h_kb KiB) are there exactly once, nothing else"
else
  fail "(f) over quota: found $got of ${#H_SET[@]}, duplicates $dups, unexpected $unexp"
fi
expect_eq "(f) over quota: report appended = what the server holds" "$(total "$OUT" appended)" "$got"
dovecot_set_quota "$DV" henry@example.test none || fail "(f) dovecot_set_quota none"
OUT=$(mvault job resume "$hjob" --auth-file "$ADMIN_DV" --json 2>"$work/resume.err")
RC=$? ERR_FILE=$work/resume.err
((RC == 0)) && pass "(f) job resume $hjob after the quota was raised: exit 0" || fail "(f) job resume $hjob exited $RC: $(show_err)"
expect_eq "(f) job show: status done" "$(job_status "$hjob")" "done"
dv_verify "(f) after resume: all ${#H_SET[@]} exactly once" henry@example.test INBOX "${H_SET[@]}"

########################################################################################
# (g) kill -9 at random moments, resume each time
########################################################################################

ids_before=$(job_ids)
gjob="" kills=0
for round in 1 2 3 4; do
  if [[ -z $gjob ]]; then
    bg_mailvault "$work/g-$round.out" restore --to "imap://127.0.0.1:$DP" --no-tls --auth-file "$ADMIN_DV" \
      --users ivan@example.test --workers 1 --connections 1 --batch 10 --bwlimit 150K --timeout 5 --json
  else
    bg_mailvault "$work/g-$round.out" job resume "$gjob" --auth-file "$ADMIN_DV" --json
  fi
  # A resume may first wait out the previous run's intents (--timeout 5 + 5 s grace: an APPEND
  # cut off there may still be committing on the server), or not (the kill fell between two
  # batches): so it is killed once it has appended again, mid-job, not after a fixed time
  # (which a resume with nothing to wait for could outrun: a flake under ASan).
  if [[ -n $gjob ]]; then
    base=$(dv_count ivan@example.test) deadline=$((SECONDS + 40))
    while kill -0 "$BG_PID" 2>/dev/null && ((SECONDS < deadline)); do
      n=$(dv_count ivan@example.test)
      [[ $n =~ ^[0-9]+$ && $base =~ ^[0-9]+$ ]] && ((n >= base + 20)) && break
      sleep 0.1
    done
  else
    random_sleep 200 1500
  fi
  if kill -9 "$BG_PID" 2>/dev/null; then
    kills=$((kills + 1))
    wait "$BG_PID" 2>/dev/null
    what="killed"
  else
    wait "$BG_PID" 2>/dev/null
    what="ended by itself (exit $?) before the kill"
  fi
  [[ -n $gjob ]] || gjob=$(new_job "$ids_before")
  echo "     (g) round $round: $what with $(dv_count ivan@example.test) of ${#I_SET[@]} in ivan's INBOX (job ${gjob:-not created yet})"
  [[ -n $gjob && $(job_status "$gjob") == "done" ]] && break
  ((round < 3)) || [[ -z $gjob ]] || break   # three rounds, the last ones on a job that exists
done
if [[ -z $gjob ]]; then
  fail "(g) after the kills, job list --json shows no new job"
else
  st=$(job_status "$gjob")
  if [[ $st != "done" ]]; then
    OUT=$(mvault job resume "$gjob" --auth-file "$ADMIN_DV" --json 2>"$work/resume.err")
    RC=$? ERR_FILE=$work/resume.err
    ((RC == 0)) && pass "(g) final job resume $gjob (status was $st): exit 0" || fail "(g) final job resume $gjob exited $RC: $(show_err)"
  else
    pass "(g) job $gjob was already done ($kills kill(s) landed while it ran)"
  fi
  expect_eq "(g) job show: status done" "$(job_status "$gjob")" "done"
fi
((kills >= 2)) && pass "(g) $kills kill -9 landed mid-job" || fail "(g) only $kills kill(s) landed mid-job: the job ran too fast to test"
dv_verify "(g) after kill -9 x$kills and resumes: all ${#I_SET[@]} exactly once, no duplicate" ivan@example.test INBOX "${I_SET[@]}"

########################################################################################
# (h) Dovecot restarted mid-job
########################################################################################

ids_before=$(job_ids)
bg_mailvault "$work/h.out" restore --to "imap://127.0.0.1:$DP" --no-tls --auth-file "$ADMIN_DV" \
  --users judy@example.test --workers 1 --connections 1 --batch 10 --bwlimit 150K --timeout 5 --json
pid=$BG_PID
deadline=$((SECONDS + 30))
while [[ $(dv_count judy@example.test) =~ ^(0|none)$ ]] && kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.02; done
at=$(dv_count judy@example.test)
if kill -0 "$pid" 2>/dev/null; then
  # A stopped Dovecot waits for its open IMAP sessions to end (the restore's, here); with a
  # 1 s stop timeout the harness kills the instance's process group instead, so the
  # restore's connection is cut mid-job as in a crash, then Dovecot starts again.
  # (A master killed that way may linger as a zombie, which `dovecot` would take for a
  # running instance: its pid file goes.)
  MV_STOP_TIMEOUT=1 dovecot_stop "$DV" 2>/dev/null || rm -f "$DV/run/master.pid"
  dovecot_restart "$DV" || fail "(h) dovecot_restart"
  echo "     (h) Dovecot restarted with $at of ${#J_SET[@]} in judy's INBOX"
else
  fail "(h) the restore ended before the restart could happen ($at in INBOX): nothing tested"
fi
BG_RC=""
wait_gone "$pid" 120 || fail "(h) the restore still ran 120 s after the restart (killed)"
RC=${BG_RC:-137}
hj=$(jpy "$(grep '^{' "$work/h.out" | tail -n 1)" "d['job']")
[[ -n $hj ]] || hj=$(new_job "$ids_before")
if ((RC == 0)); then
  pass "(h) the job rode the restart out: exit 0"
else
  st=$(job_status "$hj")
  [[ $st == interrupted || $st == failed ]] && pass "(h) the job ended $st (exit $RC)" || fail "(h) exit $RC, job ${hj:-?} status '$st': $(tail -n 2 "$work/h.out" | tr '\n' ' ')"
  OUT=$(mvault job resume "$hj" --auth-file "$ADMIN_DV" --json 2>"$work/resume.err")
  RC=$? ERR_FILE=$work/resume.err
  ((RC == 0)) && pass "(h) job resume $hj: exit 0" || fail "(h) job resume $hj exited $RC: $(show_err)"
fi
dv_verify "(h) after the restart: all ${#J_SET[@]} exactly once" judy@example.test INBOX "${J_SET[@]}"

########################################################################################
# (i) --into one mailbox, --map two users onto another
########################################################################################

restore_dv --auth-file "$ADMIN_DV" --users kate@example.test,leo@example.test --into review1@example.test
((RC == 0)) || fail "(i) --into exited $RC: $(show_err)"
dv_verify "(i) --into review1: kate's and leo's mail, each exactly once" review1@example.test INBOX "${K_SET[@]}" "${L_SET[@]}"
restore_dv --auth-file "$ADMIN_DV" --users kate@example.test,leo@example.test \
  --map kate@example.test=review2@example.test --map leo@example.test=review2@example.test
((RC == 0)) || fail "(i) --map exited $RC: $(show_err)"
dv_verify "(i) --map kate,leo -> review2: each exactly once" review2@example.test INBOX "${K_SET[@]}" "${L_SET[@]}"
expect_eq "(i) kate's own INBOX untouched" "$(dv_count kate@example.test)" 0
expect_eq "(i) leo's own INBOX untouched" "$(dv_count leo@example.test)" 0

echo "     $((SECONDS - t_start)) s"
((failures)) && { echo "$failures check(s) failed"; exit 1; }
echo "all restore checks passed"
