#!/usr/bin/env bash
# Self-test of the recovery test harness (servers.sh + imap_tool.py) against real servers:
# a private Cyrus IMAP and a private Dovecot on 127.0.0.1. For each server it creates users,
# appends 5 messages (one by one as the user, and in one MULTIAPPEND as the administrator
# acting for another user), lists and verifies them, checks that an over-quota APPEND is
# refused, that a wrong password and a non-admin proxy login are refused, that the admin
# proxy login works, and that the mail survives a server restart.
#
# usage: tests/recovery/harness_selftest.sh        (as root; exit 0 when everything passed)
# Needs: cyrus-common, sasl2-bin and an imapd (tests/recovery/install-cyrus.sh), dovecot-core,
# dovecot-imapd, dovecot-lmtpd, python3. MV_KEEP=1 keeps the temporary directory.
set -uo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
not_ok() { failed=$((failed + 1)); echo "FAIL - $*"; }
# check DESCRIPTION COMMAND...: runs COMMAND, passes when it exits 0 (its output is shown
# only on failure).
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    ok "$what"
  else
    not_ok "$what"
    [[ -n $out ]] && sed 's/^/     | /' <<<"$out"
  fi
}
# jget JSON KEY: a top-level field of a JSON object, printed as JSON (strings bare).
jget() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(v if isinstance(v,str) else json.dumps(v))' "$1" "$2"; }

T=$(mktemp -d /tmp/mvrec.XXXXXX)
CY=$T/cyrus DV=$T/dovecot
cleanup() {
  cyrus_stop "$CY" >/dev/null 2>&1
  dovecot_stop "$DV" >/dev/null 2>&1
  if [[ ${MV_KEEP:-0} == 1 ]]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

########################################################################################
# Test messages: 5 small ones (bare-LF line ends in one, 8-bit UTF-8 header bytes in another,
# a folded header) and one of ~9 KiB for the quota test.
########################################################################################
M=$T/msgs
mkdir -p "$M"
for i in 1 2 3 4 5; do
  printf 'From: Sender %s <sender%s@example.test>\r\nTo: user@example.test\r\nSubject: harness message %s\r\nDate: Mon, 1 Jan 2024 10:0%s:00 +0000\r\nMessage-ID: <harness-%s@example.test>\r\n\r\nBody %s.\r\n' \
    "$i" "$i" "$i" "$i" "$i" "$i" >"$M/m$i.eml"
done
printf 'From: sender3@example.test\nSubject: harness message 3, bare LF\nDate: Mon, 1 Jan 2024 10:03:00 +0000\nMessage-ID: <harness-3@example.test>\n\nBody 3.\n' >"$M/m3.eml"
printf 'From: =?utf-8?q?J=C3=B6rg?= <j@example.test>\r\nSubject: harness message 4 \xc3\xa4\xc3\xb6\xc3\xbc raw UTF-8\r\nDate: Mon, 1 Jan 2024 10:04:00 +0000\r\nMessage-ID: <harness-4@example.test>\r\n\r\nK\xc3\xa4se.\r\n' >"$M/m4.eml"
printf 'From: sender5@example.test\r\nSubject: harness message 5,\r\n a folded subject\r\nDate: Mon, 1 Jan 2024 10:05:00 +0000\r\nMessage-ID:\r\n <harness-5@example.test>\r\n\r\nBody 5.\r\n' >"$M/m5.eml"
msgs=("$M"/m{1,2,3,4,5}.eml)
{
  printf 'From: big@example.test\r\nSubject: big\r\nMessage-ID: <big@example.test>\r\n\r\n'
  for ((i = 0; i < 120; i++)); do printf '%076d\r\n' "$i"; done
} >"$M/big.eml"   # 9.4 KB

# server_checks NAME PORT USER_LOGIN... -- runs the common checks.
#   $1 name, $2 port, $3 user A, $4 password A, $5 user B (receives the admin's MULTIAPPEND),
#   $6 admin, $7 admin password, $8 quota user, $9 its password, ${10} expected NO text
server_checks() {
  local name=$1 port=$2 ua=$3 pa=$4 ub=$5 adm=$6 apw=$7 uq=$8 pq=$9 quota_text=${10}
  local out res cap n

  cap=$(imap_tool --port "$port" --user "$ua" --password "$pa" capability) || cap='{}'
  echo "     $name greeting: $(jget "$cap" greeting)"
  echo "     $name CAPABILITY after login: $(jget "$cap" post_login | tr -d '[],"')"
  for c in UIDPLUS MULTIAPPEND LITERAL+ QUOTA; do
    check "$name: CAPABILITY has $c" grep -q "\"$c\"" <<<"$(jget "$cap" post_login)"
  done

  # 5 single APPENDs as the user; each answered with APPENDUID
  out=$(imap_tool --port "$port" --user "$ua" --password "$pa" append "${msgs[@]}")
  check "$name: 5 APPENDs as $ua succeed" test $? -eq 0
  n=$(grep -c '"appenduid": \[[0-9]*, [0-9]*\]' <<<"$out")
  check "$name: each APPEND answered [APPENDUID uidvalidity uid] ($n/5)" test "$n" -eq 5
  echo "     $name APPEND reply: $(jget "$(head -1 <<<"$out")" text)"

  out=$(imap_tool --port "$port" --user "$ua" --password "$pa" list-messages)
  check "$name: list-messages shows 5 messages" test "$(grep -c '"uid"' <<<"$out")" -eq 5
  check "$name: list-messages has all 5 Message-IDs" test \
    "$(grep -o '"message_id": "<harness-[1-5]@example.test>"' <<<"$out" | sort -u | wc -l)" -eq 5
  check "$name: verify: each of the 5 exactly once" \
    imap_tool --port "$port" --user "$ua" --password "$pa" verify "${msgs[@]}"

  # the oracle notices a duplicate
  imap_tool --port "$port" --user "$ua" --password "$pa" append "$M/m2.eml" >/dev/null
  res=$(imap_tool --port "$port" --user "$ua" --password "$pa" verify "${msgs[@]}")
  check "$name: verify fails on a duplicate" test $? -eq 1
  check "$name: verify names the duplicate" grep -q '"duplicates": {"[^"]*m2.eml": 2}' <<<"$res"

  # administrator acting as user B: one MULTIAPPEND of the 5, APPENDUID with a UID range
  out=$(imap_tool --port "$port" --user "$adm" --password "$apw" --authzid "$ub" append --multi "${msgs[@]}")
  check "$name: MULTIAPPEND of 5 as $adm for $ub succeeds" test $? -eq 0
  check "$name: MULTIAPPEND answered [APPENDUID v 1:5]" grep -q '"appenduid": \[[0-9]*, "1:5"\]' <<<"$out"
  echo "     $name MULTIAPPEND reply: $(jget "$out" text)"
  check "$name: $ub holds the 5 exactly once (checked through the admin login)" \
    imap_tool --port "$port" --user "$adm" --password "$apw" --authzid "$ub" verify "${msgs[@]}"

  # refused logins
  res=$(imap_tool --port "$port" --user "$ua" --password wrong-password login)
  check "$name: wrong password refused" test $? -eq 1
  echo "     $name wrong password: $(jget "$res" text)"
  res=$(imap_tool --port "$port" --user "$ua" --password "$pa" --authzid "$ub" login)
  check "$name: non-admin $ua cannot act as $ub" test $? -eq 1
  echo "     $name non-admin proxy: $(jget "$res" text)"
  res=$(imap_tool --port "$port" --user "$adm" --password wrong-password --authzid "$ub" login)
  check "$name: admin with a wrong password refused" test $? -eq 1

  # quota: 10 KiB; the first 9.4 KB message fits, the second does not
  out=$(imap_tool --port "$port" --user "$uq" --password "$pq" append "$M/big.eml")
  check "$name: first 9.4 KB APPEND under a 10 KiB quota succeeds" test $? -eq 0
  out=$(imap_tool --port "$port" --user "$uq" --password "$pq" append "$M/big.eml")
  check "$name: second APPEND over quota refused" test $? -eq 1
  check "$name: over-quota reply is NO" test "$(jget "$out" result)" = NO
  check "$name: over-quota reply text contains '$quota_text'" grep -qF "$quota_text" <<<"$(jget "$out" text)"
  echo "     $name over quota: NO $(jget "$out" text)"
  echo "     $name GETQUOTAROOT: $(imap_tool --port "$port" --user "$uq" --password "$pq" get-quota)"
}

# status PORT USER PASSWORD: "MESSAGES UIDVALIDITY" of the INBOX
status() {
  imap_tool --port "$1" --user "$2" --password "$3" count |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["messages"], d["uidvalidity"])'
}

# after_restart_checks NAME PORT USER PASSWORD "MESSAGES UIDVALIDITY" (from before the restart)
after_restart_checks() {
  local name=$1 port=$2 ua=$3 pa=$4 before=$5
  check "$name: after restart, $ua still holds the 5 (and the duplicate m2)" \
    imap_tool --port "$port" --user "$ua" --password "$pa" verify "${msgs[@]:0:2}" "${msgs[@]:1}"
  check "$name: MESSAGES and UIDVALIDITY unchanged by the restart ($before)" \
    test "$(status "$port" "$ua" "$pa")" = "$before"
}

since() { # seconds since $1 (an $EPOCHREALTIME), 2 decimals
  python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$EPOCHREALTIME"
}

########################################################################################
# Cyrus
########################################################################################
echo "# Cyrus IMAP ($(cyrus_imapd_path 2>/dev/null))"
CP=$(free_port)
t0=$EPOCHREALTIME
if cyrus_start "$CY" "$CP"; then
  ok "cyrus: started on 127.0.0.1:$CP ($(since "$t0") s)"
  check "cyrus: add alice@example.test" cyrus_add_user "$CY" alice@example.test alice-pw
  check "cyrus: add bob@example.test" cyrus_add_user "$CY" bob@example.test bob-pw
  check "cyrus: add carol (no domain)" cyrus_add_user "$CY" carol carol-pw
  check "cyrus: set carol's quota to 10 KiB" cyrus_set_quota "$CY" carol 10
  server_checks cyrus "$CP" alice@example.test alice-pw bob@example.test \
    "$MV_CYRUS_ADMIN" "$MV_CYRUS_ADMIN_PASS" carol carol-pw "Over quota"
  check "cyrus: cyrus_count says alice has 6" test "$(cyrus_count "$CY" alice@example.test)" = 6
  st=$(status "$CP" alice@example.test alice-pw)
  t0=$EPOCHREALTIME
  if cyrus_restart "$CY"; then
    ok "cyrus: restarted ($(since "$t0") s)"
    after_restart_checks cyrus "$CP" alice@example.test alice-pw "$st"
    res=$(imap_tool --port "$CP" --user nobody@example.test --password x login)
    check "cyrus: unknown user refused" test $? -eq 1
  else
    not_ok "cyrus: restart"
  fi
  cyrus_stop "$CY"
  check "cyrus: stopped, port closed" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$CP) 2>/dev/null"
else
  not_ok "cyrus: start"
fi

########################################################################################
# Dovecot
########################################################################################
echo "# Dovecot ($(dovecot --version))"
DP=$(free_port)
t0=$EPOCHREALTIME
if dovecot_imap_start "$DV" "$DP"; then
  ok "dovecot: started on 127.0.0.1:$DP ($(since "$t0") s)"
  check "dovecot: set carol@example.test's quota to 10 KiB" dovecot_set_quota "$DV" carol@example.test 10
  server_checks dovecot "$DP" alice@example.test "$MV_DOVECOT_USER_PASS" bob@example.test \
    "$MV_DOVECOT_MASTER_USER" "$MV_DOVECOT_MASTER_PASS" carol@example.test "$MV_DOVECOT_USER_PASS" "[OVERQUOTA]"
  check "dovecot: master user LOGIN 'bob@example.test*$MV_DOVECOT_MASTER_USER' works" \
    imap_tool --port "$DP" --user "bob@example.test*$MV_DOVECOT_MASTER_USER" --password "$MV_DOVECOT_MASTER_PASS" verify "${msgs[@]}"
  check "dovecot: dovecot_count (doveadm) says alice has 6" test "$(dovecot_count "$DV" alice@example.test)" = 6
  st=$(status "$DP" alice@example.test "$MV_DOVECOT_USER_PASS")
  t0=$EPOCHREALTIME
  if dovecot_restart "$DV"; then
    ok "dovecot: restarted ($(since "$t0") s)"
    after_restart_checks dovecot "$DP" alice@example.test "$MV_DOVECOT_USER_PASS" "$st"
  else
    not_ok "dovecot: restart"
  fi
  dovecot_stop "$DV"
else
  not_ok "dovecot: start"
fi

echo "$passed passed, $failed failed"
((failed == 0))
