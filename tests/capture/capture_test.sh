#!/usr/bin/env bash
# End-to-end journal capture with real clients and servers on 127.0.0.1:
#   1. swaks: plain SMTP, STARTTLS + AUTH PLAIN/LOGIN (a self-signed certificate), a wrong
#      password, AUTH refused in the clear; LMTP with per-recipient replies;
#   2. Postfix's smtp-source: 2,000 messages over 20 sessions, every one acknowledged and stored;
#   3. the Exchange envelope journal report fixtures (tests/fixtures/journal) sent over SMTP:
#      each stored original and its envelope recipients must be what the fixture says
#      (the fixtures were checked by an independent Python parser, check_fixtures.py);
#   4. a real Postfix journaling into mailvault with always_bcc, and with recipient_bcc_maps
#      (archive+user=domain@ sub-addresses), envelopes checked per message;
#   5. SIGHUP reload (allow list), status while running, SIGTERM drain;
#   6. hostile clients (hostile_smtp.py); a vault on a nearly full tmpfs (452 4.3.1, nothing
#      acknowledged is lost); a kill -9 loop counting acknowledgements (kill_loop.sh).
# Needs root (Postfix) and the packages scripts/install-deps.sh installs; a missing tool is a
# failure, not a skip: the README's test command installs them.
#   tests/capture/capture_test.sh path/to/mailvault [KILL_CYCLES]
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

mv_bin=$(realpath "$1")
kill_cycles=${2:-10}
for tool in postfix smtp-source swaks openssl python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/install-deps.sh installs it)"; exit 1; }
done
((EUID == 0)) || { echo "FAIL: this test needs root (a private Postfix instance)"; exit 1; }

work=$(mktemp -d /tmp/mv-capture.XXXXXX)
chmod 755 "$work"
serve_pid=""
pf_dirs=()
cleanup() {
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null
  mountpoint -q "$work/low" 2>/dev/null && { kill -9 "${low_pid:-0}" 2>/dev/null; sleep 0.2; umount "$work/low"; }
  for d in "${pf_dirs[@]}"; do postfix_stop "$d" >/dev/null 2>&1; done
  keep_or_remove_work "kept $work for inspection"
}
trap cleanup EXIT

vault=$work/vault key=$work/master.key
mvault init >/dev/null || { echo "FAIL: init"; exit 1; }

smtp_port=$(free_port) lmtp_port=$(free_port)
# A self-signed certificate for STARTTLS, and one AUTH user.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mailvault.test" \
  -keyout "$work/tls.key" -out "$work/tls.crt" >/dev/null 2>&1 || { echo "FAIL: openssl"; exit 1; }
echo "journal $(echo journal-secret | mvault hash-password)" >"$work/users"
write_config() { # write_config ALLOW (/25: hostile_smtp.py connects from 127.0.0.200 to be refused)
  {
    echo "vault = $vault"
    echo "key-file = $key"
    # the limits hostile_smtp.py tests at: its max-message-bytes and [capture] section
    python3 "$here/hostile_smtp.py" --print-config | sed "s|^allow = .*|allow = $1|"
    cat <<EOF
smtp-listen = 127.0.0.1:$smtp_port
lmtp-listen = 127.0.0.1:$lmtp_port
hostname = mailvault.test
tls-certificate = $work/tls.crt
tls-key = $work/tls.key
auth-users = $work/users
EOF
  } >"$work/mailvault.conf"
}
write_config "127.0.0.0/25"

start_serve() {
  "$mv_bin" --config "$work/mailvault.conf" serve 2>>"$work/serve.log" &
  serve_pid=$!
  wait_port "$smtp_port" 10 && wait_port "$lmtp_port" 10
}
stop_serve() {
  kill -TERM "$serve_pid"
  wait "$serve_pid"
  local rc=$?
  serve_pid=""
  return $rc
}
status_field() { mvault status --json | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

start_serve || { echo "FAIL: serve did not start"; cat "$work/serve.log"; exit 1; }

# ---- 1. swaks ----
out=$(swaks --server 127.0.0.1:$smtp_port --from s@example.test --to r1@example.test \
  --header "Subject: plain-capture-probe" --body "plain body" 2>&1)
check "swaks plain SMTP is stored (250)" grep -q "<-  250 2.0.0 Ok: archived" <<<"$out"
out=$(swaks --server 127.0.0.1:$smtp_port --tls --auth PLAIN --auth-user journal --auth-password journal-secret \
  --from s@example.test --to r2@example.test --header "Subject: tls-auth-plain-probe" 2>&1)
check "swaks STARTTLS + AUTH PLAIN" grep -q "235 2.7.0" <<<"$out"
check "  ... and the message is stored" grep -q "<~  250 2.0.0 Ok: archived" <<<"$out"
out=$(swaks --server 127.0.0.1:$smtp_port --tls --auth LOGIN --auth-user journal --auth-password journal-secret \
  --from s@example.test --to r3@example.test --header "Subject: tls-auth-login-probe" 2>&1)
check "swaks STARTTLS + AUTH LOGIN" grep -q "235 2.7.0" <<<"$out"
out=$(swaks --server 127.0.0.1:$smtp_port --tls --auth PLAIN --auth-user journal --auth-password wrong \
  --from s@example.test --to r4@example.test 2>&1)
check "wrong password is refused (535)" grep -q "535 5.7.8" <<<"$out"
out=$(swaks --server 127.0.0.1:$smtp_port --auth PLAIN --auth-user journal --auth-password journal-secret \
  --from s@example.test --to r5@example.test 2>&1)
check "AUTH is not offered without TLS" grep -q "Host did not advertise authentication" <<<"$out"
out=$(swaks --server 127.0.0.1:$lmtp_port --protocol LMTP --from s@example.test \
  --to l1@example.test,l2@example.test,l3@example.test --header "Subject: lmtp-probe" 2>&1)
check "LMTP answers once per recipient" test "$(grep -c '<-  250 2.0.0 Ok: archived' <<<"$out")" -eq 3

# ---- 2. smtp-source load ----
sleep 1.5  # status is written once a second: let it catch up with the swaks messages
before=$(status_field '["messages"]')
smtp-source -d -s 20 -l 5120 -m 2000 -f load@example.test -t sink@example.test 127.0.0.1:$smtp_port \
  >"$work/smtp-source.log" 2>&1
check "smtp-source: 2,000 messages over 20 sessions, no client error" test $? -eq 0
# status is refreshed once a second: give it a few.
for _ in 1 2 3 4 5 6; do
  after=$(status_field '["messages"]')
  ((after - before >= 2000)) && break
  sleep 1
done
check "  ... all 2,000 acknowledged and counted ($((after - before)))" test $((after - before)) -eq 2000

# ---- 3. Exchange envelope journal reports ----
fixtures=$root/tests/fixtures/journal
# Python's smtplib, not swaks: swaks adds a line end to data that already ends in one, and
# the broken-report fixtures are checked byte for byte.
python3 - "$smtp_port" "$fixtures" <<'EOF' >"$work/journal-send.log" 2>&1
import glob, os, smtplib, sys
port, fixtures = int(sys.argv[1]), sys.argv[2]
bad = 0
with smtplib.SMTP("127.0.0.1", port) as s:
    for f in sorted(glob.glob(os.path.join(fixtures, "*.eml"))):
        # SMTP's canonical form (smtplib sends bytes as they are); the server stores LF again.
        data = open(f, "rb").read().replace(b"\n", b"\r\n")
        try:
            s.sendmail("journal-agent@example.test", ["journal@vault.example.net"], data)
        except smtplib.SMTPException as e:
            print("FAIL %s: %s" % (os.path.basename(f), e)); bad += 1
sys.exit(1 if bad else 0)
EOF
check "journal report fixtures accepted over SMTP" test $? -eq 0

# ---- 4. Postfix journaling into mailvault ----
for mode in always_bcc recipient_bcc; do
  d=$work/postfix-$mode
  pf_port=$(free_port)
  if postfix_start "$d" "$pf_port" "$smtp_port" "$mode" >"$work/postfix-$mode.start.log" 2>&1; then
    pf_dirs+=("$d")
    for u in alice bob carol; do
      swaks --server 127.0.0.1:$pf_port --from sender@example.test --to "$u@example.test" \
        --header "Subject: postfix-$mode-$u" --body "journaled by postfix $mode for $u" >/dev/null 2>&1 ||
        fail "postfix $mode did not take the message for $u"
    done
    check "postfix $mode: queue drained into mailvault" postfix_wait_queue_empty "$d" 30
  else
    fail "postfix $mode did not start"; cat "$work/postfix-$mode.start.log"
  fi
done

# ---- 5. status, SIGHUP, SIGTERM ----
check "status --json reports the listeners" test "$(status_field '["listen"][0]')" = "smtp 127.0.0.1:$smtp_port"
write_config "10.0.0.0/8"
kill -HUP "$serve_pid"; sleep 1.5
out=$(swaks --server 127.0.0.1:$smtp_port --from s@example.test --to r@example.test --quit-after CONNECT 2>&1)
check "after SIGHUP a loopback client outside the new allow list gets 554" grep -q "<\*\* 554 5.7.1" <<<"$out"
write_config "127.0.0.0/25"
kill -HUP "$serve_pid"; sleep 1.5
out=$(swaks --server 127.0.0.1:$smtp_port --from s@example.test --to r@example.test --quit-after HELO 2>&1)
check "and after the next SIGHUP it is allowed again" grep -q "<-  250" <<<"$out"

# Hostile clients, while serving (writes what must be checked once serve stops).
if [[ -f $here/hostile_smtp.py ]]; then
  # AddressSanitizer's quarantine holds freed memory a while: allow it more RSS growth.
  slack=1024
  links_asan "$(mailvault_admin "$mv_bin")" && slack=16384
  python3 "$here/hostile_smtp.py" --port "$smtp_port" --lmtp-port "$lmtp_port" --pid "$serve_pid" \
    --vault "$vault" --key-file "$key" --state "$work/hostile.state" --mailvault "$mv_bin" \
    --rss-slack-kb "$slack" >"$work/hostile.log" 2>&1
  rc=$?
  check "hostile clients (hostile_smtp.py): $(grep -c '^ok' "$work/hostile.log") cases" test $rc -eq 0
  grep -E "^FAIL" "$work/hostile.log"
fi
check "SIGTERM drains and exits 0" stop_serve
check "serve said it stopped cleanly" grep -q "stopped cleanly" "$work/serve.log"

# ---- checks on the stopped vault ----
show_json() { mvault show "$1" --json 2>/dev/null; }
# The journal fixtures: stored bytes and envelope recipients.
python3 - "$fixtures" "$mv_bin" "$vault" "$key" <<'EOF' >"$work/journal-check.log" 2>&1
import json, subprocess, sys, glob, os
fixtures, mv, vault, key = sys.argv[1:5]
def show(h):
    p = subprocess.run([mv, "--vault", vault, "--key-file", key, "show", h, "--json"], capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else None
bad = 0
groups = {}
for f in sorted(glob.glob(os.path.join(fixtures, "*.expected.json"))):
    exp = json.load(open(f))
    groups.setdefault(exp["stored_sha256"], []).append(exp)
for sha, exps in groups.items():
    m = show(sha)
    names = ",".join(e["case"] for e in exps)
    if m is None:
        print("FAIL journal %s: nothing stored as %s" % (names, sha)); bad += 1; continue
    journal_envs = [e for e in m["envelopes"] if "journal-report" in e["source"]]
    got = sorted({r for e in journal_envs for r in e["recipients"]})
    want = sorted({r for e in exps for r in e["recipients"]})
    if got != want:
        print("FAIL journal %s: recipients %s, expected %s" % (names, got, want)); bad += 1; continue
    if len(journal_envs) != len(exps):
        print("FAIL journal %s: %d captures, expected %d" % (names, len(journal_envs), len(exps))); bad += 1; continue
    for e, x in zip(journal_envs, exps):
        if (x["note"] is None) != ("note" not in e):
            print("FAIL journal %s: note %r, expected %r" % (names, e.get("note"), x["note"])); bad += 1
        if x["note"] is None and "X-MS-Journal-Report" not in e.get("journal_report", ""):
            print("FAIL journal %s: the report was not kept as provenance" % names); bad += 1
    print("ok   journal %s -> %s..., %d recipients" % (names, sha[:12], len(got)))
sys.exit(1 if bad else 0)
EOF
check "journal reports: originals and envelopes as the fixtures say" test $? -eq 0
grep -E "^(FAIL|ok)" "$work/journal-check.log" | sed 's/^/     /'

# Postfix: find each message by its subject, check the envelope recipients.
mvault list --json >"$work/list.json"
python3 - "$work/list.json" "$mv_bin" "$vault" "$key" <<'EOF' >"$work/postfix-check.log" 2>&1
import json, subprocess, sys
listing, mv, vault, key = sys.argv[1:5]
msgs = json.load(open(listing))
bad = 0
for mode in ("always_bcc", "recipient_bcc"):
    for u in ("alice", "bob", "carol"):
        subj = "postfix-%s-%s" % (mode, u)
        hits = [m for m in msgs if m.get("subject") == subj]
        if len(hits) != 1:
            print("FAIL %s: %d stored messages with that subject" % (subj, len(hits))); bad += 1; continue
        p = subprocess.run([mv, "--vault", vault, "--key-file", key, "show", hits[0]["id"], "--json"], capture_output=True, text=True)
        env = json.loads(p.stdout)["envelopes"]
        want = ["archive@journal.test"] if mode == "always_bcc" else ["%s@example.test" % u]
        got = env[0]["recipients"]
        if len(env) != 1 or got != want or env[0].get("sender") != "sender@example.test":
            print("FAIL %s: envelopes %s, expected recipients %s" % (subj, env, want)); bad += 1
        else:
            print("ok   %s: recipients %s" % (subj, got))
sys.exit(1 if bad else 0)
EOF
check "postfix journaling: one stored copy per message, envelope as journaled" test $? -eq 0
grep -E "^(FAIL|ok)" "$work/postfix-check.log" | sed 's/^/     /'

if [[ -f $work/hostile.state ]]; then
  python3 "$here/hostile_smtp.py" --verify-stored "$work/hostile.state" --vault "$vault" --key-file "$key" \
    --mailvault "$mv_bin" >"$work/hostile-verify.log" 2>&1
  check "hostile clients: what was stored is byte-exact" test $? -eq 0
  grep -E "^FAIL" "$work/hostile-verify.log"
fi
check "verify is clean" mvault verify >"$work/verify.log" 2>&1

# ---- 6. a nearly full disk: 452 (try later), nothing lost ----
lowdir=$work/low
mkdir -p "$lowdir"
if mount -t tmpfs -o size=72m tmpfs "$lowdir"; then
  "$mv_bin" --vault "$lowdir/v" --key-file "$work/low.key" init >/dev/null
  low_port=$(free_port)
  "$mv_bin" --vault "$lowdir/v" --key-file "$work/low.key" serve --no-index --smtp "127.0.0.1:$low_port" 2>"$work/low.log" &
  low_pid=$!
  wait_port "$low_port" 10
  # 900 KB messages until the vault keeps its 64 MiB reserve: the answer must turn 452 4.3.1.
  python3 - "$low_port" <<'EOF' >"$work/low-client.log" 2>&1
import smtplib, sys
port = int(sys.argv[1])
import base64, os
# Random text: it must not compress away, or the disk would never fill.
raw = base64.b64encode(os.urandom(640 * 1024)).decode()
body = "".join(raw[i:i + 76] + "\r\n" for i in range(0, len(raw), 76))
accepted, refused = [], None
with smtplib.SMTP("127.0.0.1", port) as s:
    for n in range(40):
        msg = "Subject: disk-low-%d\r\nMessage-ID: <disk-low-%d@test>\r\n\r\n%s" % (n, n, body)
        try:
            s.sendmail("a@example.test", ["b@example.test"], msg)
            accepted.append(n)
        except smtplib.SMTPDataError as e:
            refused = (e.smtp_code, e.smtp_error.decode())
            break
print("accepted", len(accepted), "refused", refused)
sys.exit(0 if refused and refused[0] == 452 and refused[1].startswith("4.3.1") and accepted else 1)
EOF
  rc=$?
  check "nearly full disk: $(tail -n 1 "$work/low-client.log")" test $rc -eq 0
  kill -TERM "$low_pid"; wait "$low_pid"
  n_low=$("$mv_bin" --vault "$lowdir/v" --key-file "$work/low.key" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"])')
  want_low=$(sed -n 's/^accepted \([0-9]*\).*/\1/p' "$work/low-client.log")
  check "  ... every acknowledged message is stored ($n_low of $want_low), verify clean" \
    bash -c "[[ '$n_low' == '$want_low' ]] && '$mv_bin' --vault '$lowdir/v' --key-file '$work/low.key' verify >/dev/null"
  umount "$lowdir"
else
  fail "cannot mount a tmpfs for the disk-full case (needs root)"
fi

# ---- 7. kill -9 loop ----
if [[ -f $here/kill_loop.sh ]] && ((kill_cycles > 0)); then
  "$here/kill_loop.sh" "$mv_bin" "$kill_cycles" >"$work/kill-loop.log" 2>&1
  rc=$?
  check "kill -9 loop ($kill_cycles cycles): $(tail -n 1 "$work/kill-loop.log")" test $rc -eq 0
fi

if ((failures)); then echo "$failures check(s) failed"; exit 1; fi
echo "all capture checks passed"
