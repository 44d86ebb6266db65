#!/usr/bin/env bash
# recovery/imap_client.h against real servers on 127.0.0.1, checked from the server's side
# with tests/recovery/imap_tool.py (Python's imaplib, not our code):
#   Dovecot: 40 corpus messages appended pipelined (LITERAL+) as a user, each exactly once and
#   byte for byte (imap_tool verify); 5 more through the master user acting as bob, into a
#   folder the client creates; a wrong password is a clear error.
#   Cyrus: the admin acting as alice, a 60 KiB quota: some appended, the rest refused one by
#   one ("Over quota") while the job goes on; the server holds exactly the appended ones.
# In ctest as imap_client_end_to_end; scripts/install-deps.sh installs Dovecot and Cyrus.
#   tests/recovery/imap_client_test.sh path/to/imap_append
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
tool=$(realpath "$1")
corpus=$(test_corpus)
work=$(mktemp -d /tmp/mv-imap-client.XXXXXX)
chmod 755 "$work"
cleanup() {
  cyrus_stop "$work/cy" >/dev/null 2>&1
  dovecot_stop "$work/dv" >/dev/null 2>&1
  keep_or_remove_work "kept $work"
}
trap cleanup EXIT
mapfile -t files < <(find "$corpus/cur" -type f | sort | head -n 45)

dport=$(free_port)
dovecot_imap_start "$work/dv" "$dport" >/dev/null || { echo "FAIL dovecot did not start"; exit 1; }
"$tool" 127.0.0.1 "$dport" alice@example.test "$MV_DOVECOT_USER_PASS" - INBOX "${files[@]:0:40}" >"$work/d1.log" 2>&1
rc=$?
if ((rc == 0)) && [[ $(grep -c '^appended ' "$work/d1.log") == 40 ]]; then pass "Dovecot: 40 appended, APPENDUIDs given"; else fail "Dovecot append (rc $rc): $(tail -n 2 "$work/d1.log")"; fi
grep -q '^read back uid 1 byte for byte' "$work/d1.log" && pass "Dovecot: the first message reads back byte for byte" || fail "Dovecot read-back"
imap_tool --port "$dport" --user alice@example.test --password "$MV_DOVECOT_USER_PASS" verify "${files[@]:0:40}" >"$work/v1.log" 2>&1 &&
  pass "Dovecot INBOX holds each of the 40 files exactly once (imap_tool verify)" || fail "Dovecot verify: $(tail -n 3 "$work/v1.log")"
"$tool" 127.0.0.1 "$dport" mvmaster mvmaster-secret bob@example.test "Recovered 2026" "${files[@]:40:5}" >"$work/d2.log" 2>&1
n=$(dovecot_count "$work/dv" bob@example.test "Recovered 2026")
[[ $n == 5 ]] && pass "Dovecot: master user as bob, folder created, 5 messages" || fail "Dovecot master user: $n messages; $(tail -n 2 "$work/d2.log")"
"$tool" 127.0.0.1 "$dport" alice@example.test wrong-password - INBOX "${files[0]}" >"$work/d3.log" 2>&1
rc=$?
((rc == 1)) && grep -q 'login refused by the server: NO \[AUTHENTICATIONFAILED\]' "$work/d3.log" &&
  pass "Dovecot: a wrong password is a clear error" || fail "wrong password: rc $rc $(cat "$work/d3.log")"

cport=$(free_port)
if cyrus_start "$work/cy" "$cport" >/dev/null 2>&1; then
  cyrus_add_user "$work/cy" alice@example.test alicepw >/dev/null
  cyrus_set_quota "$work/cy" alice@example.test 60 >/dev/null
  "$tool" 127.0.0.1 "$cport" mvadmin mvadmin-secret alice@example.test INBOX "${files[@]:0:30}" >"$work/c1.log" 2>&1
  appended=$(grep -c '^appended ' "$work/c1.log") refused=$(grep -c '^refused .* Over quota' "$work/c1.log")
  held=$(cyrus_count "$work/cy" alice@example.test)
  ((appended > 0 && refused > 0 && appended + refused == 30)) && pass "Cyrus: $appended appended, $refused refused (Over quota) one by one" ||
    fail "Cyrus quota: appended $appended refused $refused; $(tail -n 2 "$work/c1.log")"
  [[ $held == "$appended" ]] && pass "Cyrus holds exactly the $held appended" || fail "Cyrus holds $held, $appended appended"
else
  fail "Cyrus did not start (tests/recovery/install-cyrus.sh installs it)"
fi
((failures)) && { echo "$failures failed"; exit 1; }
echo "all IMAP client checks passed"
