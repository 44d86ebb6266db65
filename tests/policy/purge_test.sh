#!/usr/bin/env bash
# End-to-end test of issue 15's purge against the whole corpus (docs/purge.md):
#   setup  every corpus file imported: the first 400 (sorted) for alice@corp.example, the rest
#          for bob@corp.example. The oracle for ids is sha256sum of the raw files.
#   s      policy set: a retention of 365 days from the Date header over everything (all of the
#          2002 corpus has run out), a hold by custodian (alice) and a hold by sender (the
#          address of bob's that sent most). what-if's purgeable count.
#   w      words that occur in exactly one corpus file, each in a file the purge will take:
#          before, `count WORD` finds 1 and grep finds the word under the vault directory.
#   p      REST: POST /api/v1/purges as compliance officer c1 → 201 pending, messages = what-if's
#          purgeable; a reviewer gets 403; c1's approval 403; c2's 202; GET until done: purged =
#          dispositions = what-if's; the CSV of disposition records has one line per message,
#          naming c1 and c2 and sha256:ID.
#   c      serve stopped: every held message reads back byte for byte (cat vs the raw file);
#          `list --json` holds exactly the files not purged; a purged id is not found; no
#          unique word of a purged message appears anywhere under the vault directory (index
#          included: grep -r -a); verify and audit verify are clean; the packs shrank to at most
#          what the kept bytes need.
#   r      rebuild + reindex: the same messages, none of the words, verify clean again.
#
# usage: tests/policy/purge_test.sh PATH_TO_mailvault. Needs curl and the corpus
#        ($MAILVAULT_CORPUS, default ~/.cache/mailvault/corpus/maildir). Exit 1 on any FAIL
#        (the work directory is kept then; MV_KEEP=1 keeps it always).
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"
# shellcheck source=../capture/servers.sh
source "$here/../capture/servers.sh"

(($# == 1)) || { echo "usage: $0 PATH_TO_mailvault" >&2; exit 2; }
MV=$(realpath "$1")
corpus=$(test_corpus)
[[ -d $corpus/cur ]] || { echo "FAIL no corpus at $corpus/cur (scripts/fetch-corpus.sh)" >&2; exit 2; }
command -v curl >/dev/null || { echo "FAIL curl is not installed" >&2; exit 2; }

work=$(mktemp -d /tmp/mv-purge.XXXXXX)
V=$work/vault K=$work/key
serve_pid=""
cleanup() {
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null
  keep_or_remove_work "kept $work" MV_KEEP
}
trap cleanup EXIT
t_start=$SECONDS part_t=$SECONDS
part_done() { echo "     ($1) took $((SECONDS - part_t)) s"; part_t=$SECONDS; }
mvault() { timeout -s KILL 900 "$MV" --vault "$V" --key-file "$K" "$@"; }

########################################################################################
# setup: the corpus, two custodians
########################################################################################
mapfile -t files < <(find "$corpus/cur" -type f | sort)
N=${#files[@]}
((N > 1000)) || { fail "the corpus has only $N files"; exit 1; }
N_ALICE=400
mvault init >/dev/null 2>&1 || { fail "init"; exit 1; }
# bob's first: the import trains the compression dictionary on samples of the first files it
# reads, so the dictionary learns from mail the purge takes, and must be retrained.
mvault import -q --custodian bob@corp.example "${files[@]:N_ALICE}" >"$work/import.out" 2>&1 || fail "import (bob): $(tail -n 2 "$work/import.out")"
mvault import -q --custodian alice@corp.example "${files[@]:0:N_ALICE}" >"$work/import.out" 2>&1 || fail "import (alice): $(tail -n 2 "$work/import.out")"
# id -> file, alice's ids, and the sender of bob's that sent most, from the raw files.
python3 - "$work" "$N_ALICE" "${files[@]}" <<'PY' || { fail "setup oracle"; exit 1; }
import collections, email.utils, hashlib, json, re, sys
work, n_alice, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
ids, senders = {}, collections.Counter()
for i, p in enumerate(paths):
    data = open(p, "rb").read()
    h = hashlib.sha256(data).hexdigest()
    ids.setdefault(h, []).append(i)
    if i >= n_alice:
        head = data.split(b"\n\n", 1)[0].decode("latin-1")
        m = re.search(r"^from:[ \t]*(.*(?:\n[ \t].*)*)", head, re.I | re.M)
        if m:
            addr = email.utils.parseaddr(m.group(1).replace("\n", " "))[1].lower()
            if re.fullmatch(r"[a-z0-9._-]+@[a-z0-9.-]+\.[a-z]+", addr):
                senders[addr] += 1
sender = senders.most_common(1)[0][0]
json.dump({"ids": {h: paths[v[0]] for h, v in ids.items()},
           "alice": sorted({hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths[:n_alice]}),
           "sender": sender, "sender_files": senders[sender]}, open(work + "/oracle.json", "w"))
PY
# oj EXPR: the Python expression with d = the oracle (too big for jpy's argument).
oj() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$work/oracle.json" "$1"; }
SENDER=$(oj "d['sender']")
N_IDS=$(oj "len(d['ids'])")
expect_eq "setup: the vault holds one message per distinct corpus file" "$(jpy "$(mvault stats --json)" "d['messages']")" "$N_IDS"
mvault index run -q >/dev/null 2>&1
part_done setup

########################################################################################
# (s) the policy set and what-if
########################################################################################
cat >"$work/policies.json" <<JSON
[
  {"name": "everything-365d", "kind": "retention", "keep": "365d", "from": "date"},
  {"name": "alice-case", "kind": "hold", "case": "c-1", "custodians": ["alice@corp.example"]},
  {"name": "sender-hold", "kind": "hold", "case": "c-2", "query": "from:$SENDER"}
]
JSON
mvault policy set "$work/policies.json" >/dev/null 2>&1 || fail "(s) policy set"
WI=$(mvault policy what-if "$work/policies.json" --json 2>/dev/null)
P=$(jpy "$WI" "d['purgeable']") HELD=$(jpy "$WI" "d['held']")
N_SENDER=$("$MV" --vault "$V" --key-file "$K" count "from:$SENDER AND custodian:bob@corp.example" 2>/dev/null)
[[ $P =~ ^[0-9]+$ ]] && ((P > N_IDS / 2)) && pass "(s) what-if: $P of $N_IDS purgeable, $HELD held" || fail "(s) what-if: '$WI'"
expect_eq "(s) held = alice's messages + the sender's of bob's (the index's count)" "$HELD" "$(( $(oj "len(d['alice'])") + N_SENDER ))"
((N_SENDER > 0)) && pass "(s) the sender hold covers $N_SENDER of bob's messages ($SENDER)" || fail "(s) the sender hold covers nothing ($SENDER)"
part_done s

########################################################################################
# (w) words unique to one corpus file, in files the purge takes
########################################################################################
python3 - "$work" "$SENDER" "${files[@]:N_ALICE}" <<'PY' >"$work/words.txt" || fail "(w) no unique words found"
import collections, hashlib, json, re, sys
work, sender, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
oracle = json.load(open(work + "/oracle.json"))
alice = set(oracle["alice"])
counts, where = collections.Counter(), {}
texts = {}
for p in paths:
    data = open(p, "rb").read()
    h = hashlib.sha256(data).hexdigest()
    if h in alice or sender.encode() in data.lower():
        continue
    body = data.split(b"\n\n", 1)[-1].decode("latin-1")
    if not re.search(r"^date:.*\b200[0-9]\b", data.split(b"\n\n", 1)[0].decode("latin-1"), re.I | re.M):
        continue  # only what the 365-day retention has certainly let go
    for w in set(re.findall(r"(?<![A-Za-z0-9])[a-z]{11,16}(?![A-Za-z0-9])", body)):
        counts[w] += 1
        where[w] = h
# A word in exactly one file of the whole corpus (alice's and held ones included).
allc = collections.Counter()
for p in oracle["ids"].values():
    allc.update(set(re.findall(rb"[A-Za-z0-9]+", open(p, "rb").read().lower())))
picked = []
for w, n in counts.items():
    if n == 1 and allc[w.encode()] == 1 and where[w] not in {x[1] for x in picked}:
        picked.append((w, where[w]))
    if len(picked) == 5:
        break
if len(picked) < 5:
    sys.exit(1)
for w, h in picked:
    print(w, h)
PY
mapfile -t WORDS < <(cut -d' ' -f1 "$work/words.txt")
((${#WORDS[@]} == 5)) || fail "(w) want 5 unique words, got ${#WORDS[@]}"
for w in "${WORDS[@]}"; do
  n=$("$MV" --vault "$V" --key-file "$K" count "$w" 2>/dev/null)
  g=$(grep -r -a -l -- "$w" "$V" 2>/dev/null | wc -l)
  [[ $n == 1 && $g -ge 1 ]] || fail "(w) before the purge '$w' should be found (count $n, files holding it $g)"
done
pass "(w) before the purge each of ${WORDS[*]} is found by count and by grep under the vault"
PACKS_BEFORE=$(du -sb "$V/packs" | cut -f1) VAULT_BEFORE=$(du -sb "$V" | cut -f1)
part_done w

########################################################################################
# (p) two people over REST
########################################################################################
HP=$(free_port)
BASE=http://127.0.0.1:$HP
for u in "c1 compliance" "c2 compliance" "r1 reviewer"; do
  read -r name role <<<"$u"
  echo "$name-secret-12345" | mvault user add "$name" --role "$role" >/dev/null 2>&1 || fail "user add $name"
done
"$MV" --vault "$V" --key-file "$K" serve --http "127.0.0.1:$HP" 2>>"$work/serve.log" &
serve_pid=$!
wait_port "$HP" 30 || { fail "serve did not start: $(tail -n 3 "$work/serve.log")"; exit 1; }
api() {   # api TOKEN METHOD PATH [BODY]: API_STATUS, API_BODY
  local args=(-s -o "$work/api.out" -w '%{http_code}' --max-time 300 -X "$2" -H "Authorization: Bearer $1")
  [[ -n ${4:-} ]] && args+=(-H "Content-Type: application/json" --data "$4")
  : >"$work/api.out"
  API_STATUS=$(curl "${args[@]}" "$BASE$3" 2>/dev/null)
  API_BODY=$(cat "$work/api.out")
}
login() {
  jpy "$(curl -s --max-time 30 -H "Content-Type: application/json" -X POST \
    --data "{\"username\":\"$1\",\"password\":\"$1-secret-12345\"}" "$BASE/api/v1/auth/login")" "d['token']"
}
T1=$(login c1) T2=$(login c2) TR=$(login r1)
# The command line, through the service: a proposal by the shell's user, whose own approval is
# refused (two people), withdrawn again.
for ((k = 0; k < 100; k++)); do [[ -S $V/run/control.sock ]] && break; sleep 0.1; done
out=$(mvault purge propose --json 2>&1)
CLI_PID=$(jpy "$out" "d['id']")
expect_eq "(p) \`purge propose\` through the service: pending, the same count as what-if" \
  "$(jpy "$out" "[d['state'], d['messages'], d['proposer']['user']]")" "[\"pending\", $P, \"$(id -un)\"]"
out=$(mvault purge approve "$CLI_PID" 2>&1)
[[ $? != 0 && $out == *"needs a second person"* ]] && pass "(p) \`purge approve\` by its proposer is refused: ${out:0:120}" ||
  fail "(p) purge approve by its proposer: '$out'"
out=$(mvault purge cancel "$CLI_PID" 2>&1)
expect_eq "(p) \`purge cancel\`, then \`purge show --json\`: cancelled" "$(jpy "$(mvault purge show "$CLI_PID" --json)" "d['state']")" cancelled
api "$TR" POST /api/v1/purges
expect_eq "(p) a reviewer may not propose a purge" "$API_STATUS" 403
api "$T1" POST /api/v1/purges
expect_eq "(p) POST /api/v1/purges as c1: 201 pending, messages = what-if's purgeable" \
  "$API_STATUS $(jpy "$API_BODY" "[d['state'], d['messages'], d['proposer']['user']]")" "201 [\"pending\", $P, \"c1\"]"
PID=$(jpy "$API_BODY" "d['id']")
api "$T1" POST "/api/v1/purges/$PID/approve"
expect_eq "(p) the proposer's own approval is refused" "$API_STATUS" 403
api "$TR" POST "/api/v1/purges/$PID/approve"
expect_eq "(p) a reviewer's approval is refused" "$API_STATUS" 403
api "$T2" POST "/api/v1/purges/$PID/approve"
expect_eq "(p) c2 approves: 202" "$API_STATUS $(jpy "$API_BODY" "d['approver']['user']")" "202 c2"
deadline=$((SECONDS + 900))
while :; do
  api "$T1" GET "/api/v1/purges/$PID"
  st=$(jpy "$API_BODY" "d['state']")
  [[ $st == done || $st == failed ]] && break
  ((SECONDS > deadline)) && break
  sleep 1
done
expect_eq "(p) GET /api/v1/purges/ID: done, purged = dispositions = what-if's purgeable" \
  "$(jpy "$API_BODY" "[d['state'], d['purged'], d['dispositions'], d['error']]")" "[\"done\", $P, $P, \"\"]"
echo "     purge report: $(jpy "$API_BODY" "{k: d['report'][k] for k in ('shred', 'dictionaries', 'index', 'seconds')}")"
expect_eq "(p) the dictionary trained on bob's mail was retrained from what is left" \
  "$(jpy "$API_BODY" "any(re.match(r'dictionary 1 learnt from purged mail: retrained from \\d+ surviving messages', x) for x in d['report']['dictionaries'])")" true
curl -s --max-time 60 -H "Authorization: Bearer $T1" "$BASE/api/v1/purges/$PID/dispositions?format=csv" >"$work/dispositions.csv"
expect_eq "(p) the disposition records as CSV: a header and one line per purged message, by c1 and c2" \
  "$(python3 - "$work/dispositions.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
print(len(rows), all(r["proposer"] == "c1" and r["approver"] == "c2" and r["fingerprint"] == "sha256:" + r["id"] and int(r["size"]) > 0 for r in rows))
PY
)" "$P True"
cut -d, -f1 "$work/dispositions.csv" | tail -n +2 | sort >"$work/purged.txt"
kill -TERM "$serve_pid"
wait "$serve_pid" 2>/dev/null
serve_pid=""
part_done p

########################################################################################
# (c) the stopped vault, and (r) after rebuild + reindex
########################################################################################
check_vault() {   # check_vault LABEL
  local label=$1 w g
  mvault list --json >"$work/list.json" 2>/dev/null
  expect_eq "($label) list --json: exactly the corpus files not purged; every held one among them" \
    "$(python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
o = json.load(open(work + "/oracle.json"))
listed = {m["id"] for m in json.load(open(work + "/list.json"))}
purged = set(open(work + "/purged.txt").read().split())
print(listed == set(o["ids"]) - purged, set(o["alice"]) <= listed, not (purged & set(o["alice"])))
PY
)" "True True True"
  # Held messages byte for byte against the raw files (alice's, all of them).
  local bad=0 id
  while read -r id file; do
    cmp -s <(mvault cat "$id" 2>/dev/null) "$file" || bad=$((bad + 1))
  done < <(oj "'\\n'.join(h + ' ' + d['ids'][h] for h in d['alice'])")
  expect_eq "($label) every held message of alice reads back byte for byte" "$bad" 0
  id=$(head -n 1 "$work/purged.txt")
  mvault cat "$id" >/dev/null 2>&1 && fail "($label) purged $id still reads back" || pass "($label) a purged message is not found"
  for w in "${WORDS[@]}"; do
    g=$(grep -r -a -l -- "$w" "$V" 2>/dev/null)
    [[ -z $g ]] || fail "($label) the purged word '$w' is still in: $g"
    expect_eq "($label) count $w" "$("$MV" --vault "$V" --key-file "$K" count "$w" 2>/dev/null)" 0
  done
  mvault check >"$work/check.out" 2>&1 && pass "($label) check: the index and the vault agree" || fail "($label) check: $(tail -n 3 "$work/check.out")"
  mvault verify >"$work/verify.out" 2>&1 && pass "($label) verify is clean" || fail "($label) verify: $(tail -n 3 "$work/verify.out")"
  mvault audit verify >"$work/audit.out" 2>&1 && pass "($label) audit verify is clean" || fail "($label) audit verify: $(tail -n 3 "$work/audit.out")"
}
check_vault c
PACKS_AFTER=$(du -sb "$V/packs" | cut -f1) VAULT_AFTER=$(du -sb "$V" | cut -f1)
KEPT_SHARE=$(python3 -c "print(round(1 - $P / $N_IDS, 3))")
python3 -c "import sys; sys.exit(0 if $PACKS_AFTER <= $PACKS_BEFORE * ($KEPT_SHARE + 0.15) else 1)" &&
  pass "(c) the packs shrank from $PACKS_BEFORE to $PACKS_AFTER bytes (kept share of messages $KEPT_SHARE); the vault from $VAULT_BEFORE to $VAULT_AFTER" ||
  fail "(c) the packs did not shrink accordingly: $PACKS_BEFORE -> $PACKS_AFTER bytes, kept share $KEPT_SHARE"
part_done c

mvault rebuild >"$work/rebuild.out" 2>&1 || fail "(r) rebuild: $(tail -n 3 "$work/rebuild.out")"
mvault reindex -q >"$work/reindex.out" 2>&1 || fail "(r) reindex: $(tail -n 3 "$work/reindex.out")"
check_vault r
part_done r

echo "     $((SECONDS - t_start)) s"
((failures)) && { echo "$failures check(s) failed"; exit 1; }
echo "all purge checks passed"
