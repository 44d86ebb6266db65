#!/usr/bin/env bash
# Self-test of tests/capture/servers.sh, with Postfix's smtp-sink standing in for mailvault's
# capture server:
#   1. two private Postfix instances at once (always_bcc and recipient_bcc), each journaling
#      to its own smtp-sink; 3 messages each to alice/bob/carol@example.test via swaks; the
#      sinks' envelope recipients must be archive@journal.test, or
#      archive+USER=example.test@journal.test for the message to USER;
#   2. retry: the journal port refuses connections, then answers 450 to the end of DATA, then
#      accepts; the message must arrive within seconds of the sink accepting;
#   3. a private Dovecot: 5 messages over LMTP (smtp-source -L) land as 5 maildir files, and
#      IMAP (master-user login) sees 5 messages.
# Needs root and the packages postfix, swaks, dovecot-core, dovecot-lmtpd, dovecot-imapd.
# Exit status: 0 pass, 1 fail, 77 skipped (not root or a tool missing). KEEP=1 keeps the
# work directory; it is also kept (and named) on failure.
# shellcheck disable=SC2015,SC2001  # "ok && pass || fail": pass always succeeds
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
ok_sep="- "  # "ok   - ..." / "FAIL - ..." lines

if ((EUID != 0)); then
  echo "SKIP: harness_selftest.sh needs root (Postfix's and Dovecot's masters start as root)"
  exit 77
fi
for tool in postfix postqueue smtp-sink smtp-source swaks dovecot doveconf; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool is not installed (apt-get install postfix swaks dovecot-core dovecot-lmtpd dovecot-imapd)"
    exit 77
  fi
done

work=$(mktemp -d /tmp/mv-capture-selftest.XXXXXX) || exit 1
pf_dirs=()
sink_dirs=()
dovecot_dirs=()

cleanup() {
  local d
  for d in "${pf_dirs[@]}"; do postfix_stop "$d"; done
  for d in "${dovecot_dirs[@]}"; do dovecot_stop "$d"; done
  for d in "${sink_dirs[@]}"; do smtp_sink_stop "$d"; done
  keep_or_remove_work "work directory kept: $work" KEEP
}
trap cleanup EXIT
trap 'echo "interrupted"; failures=$((failures + 1)); exit 130' INT TERM

die() {
  fail "$*"
  exit 1
}

# ms since the epoch
now_ms() { echo $(($(date +%s%N) / 1000000)); }
declare -A timing=()
# timed NAME CMD...: runs CMD, records its wall time in ms under NAME
timed() {
  local name=$1 t0 rc
  shift
  t0=$(now_ms)
  "$@"
  rc=$?
  timing[$name]=$(($(now_ms) - t0))
  return $rc
}

# The envelope recipients (X-Rcpt-Args addresses) of a smtp-sink dump file, one per line.
dump_rcpts() { sed -n '/^Received:/q; s/^X-Rcpt-Args: <\([^>]*\)>.*/\1/p' "$1"; }
dump_subject() { sed -n 's/^Subject: //p' "$1" | head -n1; }
dump_count() { find "$1" -maxdepth 1 -name 'msg.*' -type f | wc -l; }

# Waits until DIR holds N dump files (smtp-sink writes a file as the message arrives).
wait_dumps() {
  local dir=$1 n=$2 deadline=$((SECONDS + ${3:-10}))
  while (($(dump_count "$dir") < n)); do
    ((SECONDS >= deadline)) && return 1
    sleep 0.05
  done
}

send() { # send PORT TO SUBJECT
  local out
  if ! out=$(swaks --server 127.0.0.1 --port "$1" --helo client.test --from sender@example.test \
    --to "$2" --header "Subject: $3" --body "body of $3" 2>&1); then
    echo "$out" | tail -n 15 | sed 's/^/  | /'
    return 1
  fi
}

users=(alice bob carol)

########################################################################################
echo "# 1. journal copies from two Postfix instances (always_bcc, recipient_bcc)"
########################################################################################
declare -A listen journal
for mode in always_bcc recipient_bcc; do
  journal[$mode]=$(free_port) || die "free_port"
  listen[$mode]=$(free_port) || die "free_port"
  sink_dirs+=("$work/sink-$mode")
  timed "smtp_sink_start" smtp_sink_start "$work/sink-$mode" "${journal[$mode]}" ||
    die "smtp_sink_start ($mode)"
  pf_dirs+=("$work/postfix-$mode")
  timed "postfix_start($mode)" postfix_start "$work/postfix-$mode" "${listen[$mode]}" \
    "${journal[$mode]}" "$mode" || die "postfix_start $mode"
  pass "postfix ($mode) listens on ${listen[$mode]}, journals to ${journal[$mode]}"
done

for mode in always_bcc recipient_bcc; do
  for u in "${users[@]}"; do
    send "${listen[$mode]}" "$u@example.test" "$mode to $u" || fail "swaks to $u@example.test via $mode"
  done
done
for mode in always_bcc recipient_bcc; do
  timed "drain($mode)" postfix_wait_queue_empty "$work/postfix-$mode" 30 ||
    fail "queue of $mode instance did not drain"
  wait_dumps "$work/sink-$mode" 3 || fail "$mode: fewer than 3 journal copies arrived"
done

# always_bcc: 3 copies, each to exactly archive@journal.test, one per original subject
d="$work/sink-always_bcc"
n=$(dump_count "$d")
((n == 3)) && pass "always_bcc: 3 journal copies" || fail "always_bcc: $n journal copies, want 3"
subjects=""
for f in "$d"/msg.*; do
  [[ -f $f ]] || continue
  r=$(dump_rcpts "$f" | tr '\n' ' ')
  [[ $r == "archive@journal.test " ]] || fail "always_bcc: $f has envelope recipients '$r'"
  subjects+="$(dump_subject "$f");"
done
for u in "${users[@]}"; do
  [[ $subjects == *"always_bcc to $u;"* ]] || fail "always_bcc: no journal copy of the message to $u"
done
((failures == 0)) && pass "always_bcc: envelope recipient archive@journal.test on every copy"

# recipient_bcc: the copy of the message to USER goes to archive+USER=example.test@journal.test
d="$work/sink-recipient_bcc"
n=$(dump_count "$d")
((n == 3)) && pass "recipient_bcc: 3 journal copies" || fail "recipient_bcc: $n journal copies, want 3"
before=$failures
for f in "$d"/msg.*; do
  [[ -f $f ]] || continue
  r=$(dump_rcpts "$f" | tr '\n' ' ')
  s=$(dump_subject "$f")
  u=${s#recipient_bcc to }
  [[ $r == "archive+$u=example.test@journal.test " ]] ||
    fail "recipient_bcc: copy of '$s' has envelope recipients '$r'"
done
((failures == before)) && pass "recipient_bcc: each copy to archive+USER=example.test@journal.test"
grep -h '^X-Rcpt-Args:' "$work"/sink-*/msg.* | sed 's/^/    /' | sort | uniq -c

########################################################################################
echo "# 2. retry: refused, then 450 at end of DATA, then accepted"
########################################################################################
mode=always_bcc
smtp_sink_stop "$work/sink-$mode"
send "${listen[$mode]}" alice@example.test "retry test" || fail "swaks (retry test)"
log=$(postfix_log "$work/postfix-$mode")
deadline=$((SECONDS + 10))
until grep -q 'Connection refused' "$log"; do
  ((SECONDS >= deadline)) && { fail "no 'Connection refused' deferral logged"; break; }
  sleep 0.1
done
postfix_queue_empty "$work/postfix-$mode" && fail "queue empty although the journal port is closed"
# a sink that answers 450 to "." (the message is received, then refused for now)
sink_dirs+=("$work/sink-450")
smtp_sink_start "$work/sink-450" "${journal[$mode]}" -r . || die "smtp_sink_start -r ."
deadline=$((SECONDS + 10))
until grep -q 'status=deferred (host 127.0.0.1\[127.0.0.1\] said: 450' "$log"; do
  ((SECONDS >= deadline)) && { fail "no 450 deferral logged"; break; }
  sleep 0.1
done
((failures == 0)) && pass "refused and 450 both deferred the journal copy"
smtp_sink_stop "$work/sink-450"
smtp_sink_start "$work/sink-$mode" "${journal[$mode]}" || die "smtp_sink_start (again)"
timed "retry→delivered" postfix_wait_queue_empty "$work/postfix-$mode" 10 &&
  wait_dumps "$work/sink-$mode" 4 5 ||
  fail "deferred journal copy not delivered within 10 s of the sink accepting"
((timing["retry→delivered"] <= 5000)) &&
  pass "deferred copy delivered ${timing["retry→delivered"]} ms after the sink came back" ||
  fail "deferred copy took ${timing["retry→delivered"]} ms after the sink came back"
echo "    deferrals logged: $(grep -c 'status=deferred' "$log")"

########################################################################################
echo "# 3. Dovecot LMTP (and IMAP)"
########################################################################################
lmtp_port=$(free_port) || die "free_port"
imap_port=$(free_port) || die "free_port"
dovecot_dirs+=("$work/dovecot")
timed "dovecot_lmtp_start" dovecot_lmtp_start "$work/dovecot" "$lmtp_port" "$imap_port" ||
  die "dovecot_lmtp_start"
pass "dovecot: LMTP on $lmtp_port, IMAP on $imap_port"
timed "smtp-source -L ×5" smtp-source -L -m 5 -M client.test -f sender@example.test \
  -t alice@example.test -S "lmtp selftest" "127.0.0.1:$lmtp_port" ||
  fail "smtp-source -L exited non-zero"
maildir="$work/dovecot/mail/alice@example.test"
n=$(find "$maildir/new" "$maildir/cur" -type f 2>/dev/null | wc -l)
((n == 5)) && pass "dovecot: 5 messages in $maildir/new" || {
  fail "dovecot: $n messages in the maildir, want 5"
  tail -n 20 "$(dovecot_log "$work/dovecot")"
}
owner=$(stat -c %U "$maildir/new")
[[ $owner == "$MV_TEST_USER" ]] && pass "maildir belongs to $MV_TEST_USER" ||
  fail "maildir belongs to $owner, want $MV_TEST_USER"

# IMAP: log in as alice through the master user, SELECT INBOX: 5 EXISTS
imap_out=$(
  exec 3<>"/dev/tcp/127.0.0.1/$imap_port" || exit 1
  printf 'a LOGIN %s %s\r\nb SELECT INBOX\r\nc LOGOUT\r\n' \
    "alice@example.test*$MV_DOVECOT_MASTER_USER" "$MV_DOVECOT_MASTER_PASS" >&3
  timeout 10 cat <&3
)
if grep -q '^\* 5 EXISTS' <<<"$imap_out" && grep -q '^a OK' <<<"$imap_out"; then
  pass "IMAP master-user login sees 5 messages in alice's INBOX"
else
  fail "IMAP master-user login:"
  sed 's/^/  | /' <<<"$imap_out"
fi

########################################################################################
echo "# 4. stop"
########################################################################################
for d in "${pf_dirs[@]}"; do
  timed "postfix_stop" postfix_stop "$d" || fail "postfix_stop $d"
  postfix_queue_empty "$d" || fail "queue of $d not empty at the end"
done
timed "dovecot_stop" dovecot_stop "$work/dovecot" || fail "dovecot_stop"
for d in "${sink_dirs[@]}"; do smtp_sink_stop "$d" || fail "smtp_sink_stop $d"; done
for p in "${listen[@]}" "${journal[@]}" "$lmtp_port" "$imap_port"; do
  mv__port_listening "$p" && fail "port $p still listening after stop"
done
leftover=$(ps -e -o pid=,stat=,args= | awk '$2 !~ /^Z/' | grep -F "$work" | grep -v grep)
[[ -z $leftover ]] && pass "no server process left" || fail "processes left: $leftover"

echo "# timings (ms)"
for k in "${!timing[@]}"; do printf '    %-28s %6d\n' "$k" "${timing[$k]}"; done | sort

if ((failures)); then
  echo "harness_selftest: $failures FAILED"
  exit 1
fi
echo "harness_selftest: all passed"
