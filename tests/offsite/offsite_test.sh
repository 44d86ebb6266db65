#!/usr/bin/env bash
# End-to-end test of issue 16's offsite replication against real servers on 127.0.0.1: a
# one-node Ceph cluster's S3 gateway (behind a fault-injecting proxy) and a private OpenSSH sshd
# (tests/offsite/servers.sh), with part of the corpus. docs/replication.md.
#   setup  1,500 corpus files imported (custodian alice), two API users, the index built.
#   (a)    `offsite sync` ships to both targets; the sizes of the packs offsite equal the local
#          pack files (the oracle: stat and the S3 listing / find); `offsite verify --deep` is
#          clean; `offsite status --json` says ok with no lag; no word of the mail is readable
#          offsite (grep over the SFTP copy finds none of 5 words that grep finds in the corpus).
#   (f)    faults, each followed by a clean sync and verify once it is gone:
#          wrong credentials; a missing bucket without create-bucket; a clock 15 minutes off
#          (faketime); the link dropped (proxy); the gateway killed mid-upload (kill -9) and
#          started again; a pack deleted offsite and one damaged offsite (serve heals both by
#          itself); the SFTP server's disk full; bwlimit honoured.
#   (d)    the DR drill: serve stopped, the vault directory deleted, `dr restore` from S3: every
#          message id equals the SHA-256 of a corpus file and reads back with that hash, the
#          search counts, users and audit chain are as before. The same from SFTP.
#
# usage: tests/offsite/offsite_test.sh PATH_TO_mailvault. Needs root (the servers), the corpus.
set -uo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"
# shellcheck source=servers.sh
source "$here/servers.sh"

(($# == 1)) || { echo "usage: $0 PATH_TO_mailvault" >&2; exit 2; }
MV=$(realpath "$1")
corpus=$(test_corpus)
[[ -d $corpus/cur ]] || { echo "FAIL no corpus at $corpus/cur" >&2; exit 2; }

work=$(mktemp -d /tmp/mv-offsite.XXXXXX)
V=$work/vault K=$work/key CONF=$work/mailvault.conf
serve_pid=""
cleanup() {
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null
  offsite_cleanup_all
  keep_or_remove_work "kept $work" MV_KEEP
}
trap cleanup EXIT
part_t=$SECONDS
part_done() { echo "     ($1) took $((SECONDS - part_t)) s"; part_t=$SECONDS; }
mvault() { timeout -s KILL 600 "$MV" --vault "$V" --key-file "$K" --config "$CONF" "$@"; }

offsite_start_rgw "$work/s3" || { fail "starting the S3 gateway"; exit 1; }
offsite_start_sshd "$work/sftp" || { fail "starting sshd"; exit 1; }
offsite_start_proxy S3_PROXY "$MV_S3_PORT" || { fail "starting the proxy"; exit 1; }
part_done servers

write_conf() {  # write_conf [extra lines for the s3 section...]
  {
    echo "[offsite s3-dr]"
    echo "url = s3://127.0.0.1:$S3_PROXY/mv-dr"
    echo "no-tls = yes"
    echo "credentials-file = $work/s3/s3.cred"
    echo "stall-timeout = 10"
    printf '%s\n' "$@"
    echo "[offsite sftp-branch]"
    echo "url = $MV_SFTP_URL"
    echo "identity-file = $MV_SFTP_IDENTITY"
    echo "known-hosts = $MV_SFTP_KNOWN_HOSTS"
    echo "stall-timeout = 10"
  } >"$CONF"
}
write_conf

########################################################################################
# setup
########################################################################################
mapfile -t files < <(find "$corpus/cur" -type f | sort | head -n 1500)
mvault init >/dev/null 2>&1 || { fail "init"; exit 1; }
mvault import -q --custodian alice@corp.example "${files[@]}" >"$work/import.out" 2>&1 || fail "import: $(tail -n 2 "$work/import.out")"
for u in admin1:admin op1:operator; do
  echo "${u%%:*}-secret-12345" | mvault user add "${u%%:*}" --role "${u##*:}" >/dev/null 2>&1 || fail "user add $u"
done
mvault index run -q >/dev/null 2>&1 || fail "index run"
sha256sum "${files[@]}" | awk '{print $1}' | sort -u >"$work/oracle.ids"
part_done setup

# local_pack_bytes: the bytes of every local pack file.
local_pack_bytes() { find "$V/packs" -name '*.pack' -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
s3_pack_bytes() {
  offsite_s3req raw GET /mv-dr "list-type=2&prefix=packs/" 2>/dev/null |
    python3 -c 'import re,sys; print(sum(int(x) for x in re.findall(r"<Size>(\d+)</Size>", sys.stdin.read())))'
}
sftp_pack_bytes() { find "$MV_SFTP_DIR/packs" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
verify_clean() {  # verify_clean LABEL [--deep]
  local out
  out=$(mvault offsite verify "${@:2}" --json 2>&1)
  if [[ $(jpy "$out" "all(t['ok'] for t in d['targets']) and len(d['targets']) == 2" 2>/dev/null) == true ]]; then
    pass "$1: offsite verify ${*:2} is clean on both targets"
  else
    fail "$1: offsite verify ${*:2}: $out"
  fi
}

########################################################################################
# (a) ship, compare, verify, status
########################################################################################
out=$(mvault offsite sync 2>&1) && pass "(a) offsite sync ships to both targets" || fail "(a) offsite sync: $out"
expect_eq "(a) S3: the pack bytes offsite equal the local pack files" "$(s3_pack_bytes)" "$(local_pack_bytes)"
expect_eq "(a) SFTP: the pack bytes offsite equal the local pack files" "$(sftp_pack_bytes)" "$(local_pack_bytes)"
verify_clean "(a)" --deep
st=$(mvault offsite status --json 2>&1)
expect_eq "(a) status: both ok with no lag" "$(jpy "$st" "' '.join('%s/%d' % (t['state'], t['lag_bytes']) for t in d['targets'])")" "ok/0 ok/0"
# Words of the mail: found in the corpus files (and in the local index), never offsite.
words=$(cat "${files[@]:0:40}" | tr -cs 'A-Za-z' '\n' | awk 'length($0) >= 9' | sort | uniq -c | sort -rn | awk 'NR <= 5 {print $2}')
leaks=0
for w in $words; do grep -r -a -q -- "$w" "$MV_SFTP_DIR" && leaks=$((leaks + 1)); done
expect_eq "(a) none of 5 frequent words ($(echo $words)) is readable in the SFTP copy" "$leaks" 0
part_done a

########################################################################################
# (f) faults
########################################################################################
# Wrong credentials.
echo "AKIAWRONG0000000000 wrongsecretwrongsecret" >"$work/bad.cred" && chmod 600 "$work/bad.cred"
cp "$CONF" "$work/good.conf"
sed -i "s#credentials-file = .*#credentials-file = $work/bad.cred#" "$CONF"
out=$(mvault offsite sync --target s3-dr 2>&1)
[[ $? -ne 0 && $out == *"credentials were refused"* ]] && pass "(f) wrong credentials: refused, and said so" || fail "(f) wrong credentials: $out"
cp "$work/good.conf" "$CONF"
# A missing bucket, creation not allowed.
sed -i "s#/mv-dr\$#/mv-missing#" "$CONF" && sed -i "/^\[offsite s3-dr\]/a create-bucket = no" "$CONF"
out=$(mvault offsite sync --target s3-dr 2>&1)
[[ $? -ne 0 && $out == *"does not exist"* ]] && pass "(f) missing bucket without create-bucket: said so" || fail "(f) missing bucket: $out"
cp "$work/good.conf" "$CONF"
# A clock more than 15 minutes ahead (16: S3 and RGW accept up to 15 minutes either way).
if command -v faketime >/dev/null; then
  # shellcheck disable=SC2046  # the prefix is words
  out=$(timeout 120 $(offsite_skewed_prefix +16m) "$MV" --vault "$V" --key-file "$K" --config "$CONF" offsite verify --target s3-dr 2>&1)
  [[ $out == *"clock"* ]] && pass "(f) a clock 16 minutes off: refused, and the message names the clock" || fail "(f) clock skew: $out"
else
  fail "(f) faketime is not installed"
fi
# The link dropped during a sync, then back.
mvault import -q --custodian bob@corp.example $(find "$corpus/cur" -type f | sort | sed -n '1501,2500p') >/dev/null 2>&1
offsite_proxy_drop reset
out=$(mvault offsite sync --target s3-dr 2>&1)
(($? != 0)) && pass "(f) link dropped: the sync fails ($(head -c 120 <<<"$out"))" || fail "(f) link dropped: the sync succeeded"
offsite_proxy_restore
out=$(mvault offsite sync 2>&1) && pass "(f) link back: the sync finishes" || fail "(f) link back: $out"
verify_clean "(f) link"
# The gateway killed in the middle of an upload (throttled so that it is mid-upload), restarted.
mvault import -q --custodian carol@corp.example $(find "$corpus/cur" -type f | sort | sed -n '2501,3500p') >/dev/null 2>&1
offsite_proxy_throttle 300000
mvault offsite sync --target s3-dr >"$work/killed.out" 2>&1 &
sync_pid=$!
sleep 2
offsite_kill_rgw
wait "$sync_pid" && fail "(f) gateway killed: the sync did not fail" || pass "(f) gateway killed mid-upload: the sync fails ($(head -c 100 "$work/killed.out"))"
offsite_proxy_restore
offsite_restart_rgw || fail "(f) restarting the gateway"
out=$(mvault offsite sync 2>&1) && pass "(f) gateway back: the sync finishes" || fail "(f) gateway back: $out"
verify_clean "(f) gateway" --deep
# SFTP: the server's disk full, then room again.
offsite_sftp_small_disk 1m && {
  mvault import -q --custodian dave@corp.example $(find "$corpus/cur" -type f | sort | sed -n '3501,4000p') >/dev/null 2>&1
  out=$(mvault offsite sync --target sftp-branch 2>&1)
  [[ $? -ne 0 && $out == *"full"* ]] && pass "(f) SFTP disk full: the sync fails and says the disk may be full" || fail "(f) SFTP disk full: $out"
  offsite_sftp_unmount
  out=$(mvault offsite sync 2>&1) && pass "(f) SFTP room again: the sync finishes" || fail "(f) SFTP room again: $out"
  verify_clean "(f) disk"
}
part_done f1

# serve heals what is lost or damaged offsite, by itself.
write_conf "check-interval = 2" "deep-check-interval = 4"
# Not through mvault (a function): $! must be serve itself, for the kill below.
api_port=$(offsite_free_port)
"$MV" --vault "$V" --key-file "$K" --config "$CONF" serve --smtp 127.0.0.1:0 --http "127.0.0.1:$api_port" >"$work/serve.log" 2>&1 &
serve_pid=$!
# Wait for its control socket (a command run meanwhile would open the vault itself, and serve
# would find it busy).
for _ in $(seq 100); do [[ -S $V/run/control.sock ]] && break; sleep 0.1; done
first=$(offsite_s3req raw GET /mv-dr "list-type=2&prefix=packs/" | grep -o '<Key>[^<]*</Key>' | head -n 1 | sed 's/<[^>]*>//g')
second=$(offsite_s3req raw GET /mv-dr "list-type=2&prefix=packs/" | grep -o '<Key>[^<]*</Key>' | sed -n 2p | sed 's/<[^>]*>//g')
offsite_s3req raw DELETE "/mv-dr/$first" >/dev/null
size=$(offsite_s3req raw GET /mv-dr "list-type=2&prefix=$second" | grep -o '<Size>[0-9]*' | head -n 1 | tr -dc 0-9)
head -c "$size" /dev/urandom >"$work/junk" && offsite_s3req raw PUT "/mv-dr/$second" "" "$work/junk" >/dev/null
out=$(mvault offsite verify --deep --target s3-dr 2>&1)
[[ $out == *"missing: $first"* && $out == *"content: $second"* ]] && pass "(f) verify --deep names the deleted and the damaged pack" || fail "(f) verify after damage: $out"
healed=0
for _ in $(seq 40); do
  sleep 1
  o=$(mvault offsite verify --deep --target s3-dr 2>&1) && { healed=1; break; }
done
((healed)) && pass "(f) serve shipped the lost and the damaged pack again by itself" || fail "(f) not healed: $o"
st=$(mvault offsite status --json 2>&1)
expect_eq "(f) status back to ok on both" "$(jpy "$st" "' '.join(t['state'] for t in d['targets'])")" "ok ok"
# The link drops while serve ships new mail: the state goes down, and comes back to ok by itself
# once the link is back (no command in between).
offsite_proxy_drop reset
mvault import -q --custodian frank@corp.example $(find "$corpus/cur" -type f | sort | sed -n '4001,4200p') >/dev/null 2>&1
down=""
for _ in $(seq 50); do
  down=$(jpy "$(mvault offsite status --json 2>&1)" "[t['state'] for t in d['targets'] if t['name'] == 's3-dr'][0]")
  [[ $down == down ]] && break
  sleep 0.2
done
expect_eq "(f) link dropped under serve: s3-dr is down" "$down" down
offsite_proxy_restore
back=""
for _ in $(seq 90); do
  back=$(jpy "$(mvault offsite status --json 2>&1)" "' '.join('%s/%d' % (t['state'], t['lag_bytes']) for t in d['targets'])")
  [[ $back == "ok/0 ok/0" ]] && break
  sleep 1
done
expect_eq "(f) link back: serve's retries bring both targets to ok with no lag, by themselves" "$back" "ok/0 ok/0"
verify_clean "(f) after the link came back"
# The same figures through the REST API (an operator) and /metrics.
tok=$(jpy "$(curl -s --max-time 10 -H 'Content-Type: application/json' -d '{"username":"op1","password":"op1-secret-12345"}' \
  "http://127.0.0.1:$api_port/api/v1/auth/login")" "d['token']")
sleep 1.5  # the status the API serves is refreshed every second
api_out=$(curl -s --max-time 10 -H "Authorization: Bearer $tok" "http://127.0.0.1:$api_port/api/v1/offsite")
expect_eq "(f) GET /api/v1/offsite: both targets, ok" "$(jpy "$api_out" "' '.join('%s:%s' % (t['name'], t['state']) for t in d['targets'])")" "s3-dr:ok sftp-branch:ok"
metrics=$(curl -s --max-time 10 -H "Authorization: Bearer $tok" "http://127.0.0.1:$api_port/metrics")
grep -q 'mailvault_offsite_state{target="s3-dr",state="ok"} 1' <<<"$metrics" && grep -q '^mailvault_offsite_lag_bytes{target="sftp-branch"} 0' <<<"$metrics" &&
  pass "(f) /metrics: mailvault_offsite_state and _lag_bytes per target" || fail "(f) /metrics: $(grep offsite <<<"$metrics" | head -n 5)"
kill "$serve_pid" && wait "$serve_pid"
serve_pid=""
part_done f2

# bwlimit: a target limited to 256 KiB/s takes at least (bytes / 256 KiB) * 0.8 seconds.
write_conf "bwlimit = 256K" "parallel = 1" "index-snapshot-interval = 0"  # the packs only: the time is theirs
offsite_s3req purge mv-dr >/dev/null 2>&1
rm -rf "$V/offsite/s3-dr"
bytes=$(local_pack_bytes)
t0=$(date +%s.%N)
mvault offsite sync --target s3-dr >/dev/null 2>&1 || fail "(f) bwlimit: the sync failed"
secs=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
want=$(python3 -c "print(round($bytes / 262144 * 0.8, 1))")
python3 -c "import sys; sys.exit(0 if $secs >= $want else 1)" && pass "(f) bwlimit 256K: $bytes bytes took $secs s (at least $want)" || fail "(f) bwlimit: $bytes bytes in $secs s, want at least $want"
write_conf
part_done bwlimit

########################################################################################
# (p) a purge reaches offsite: with versioning on the bucket, the purge rewrites packs, the
#     next sync ships the new generations and deletes every version of the old ones
########################################################################################
offsite_rgw_versioning mv-dr Enabled >/dev/null || fail "(p) versioning on"
mvault offsite sync >/dev/null 2>&1 || fail "(p) sync before the purge"
mvault index run -q >/dev/null 2>&1
cat >"$work/policies.json" <<'JSON'
[
  {"name": "everything-365d", "kind": "retention", "keep": "365d", "from": "date"},
  {"name": "alice-case", "kind": "hold", "case": "c-1", "custodians": ["alice@corp.example"]}
]
JSON
mvault policy set "$work/policies.json" >/dev/null 2>&1 || fail "(p) policy set"
index_keys() { offsite_s3req raw GET /mv-dr "list-type=2&prefix=index/" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'; }
index_before=$(index_keys)
[[ -n $index_before ]] && pass "(p) an index snapshot is offsite ($(wc -l <<<"$index_before") chunks)" || fail "(p) no index snapshot offsite"
out=$(mvault purge propose --json 2>&1)
PURGE=$(jpy "$out" "d['id']")
[[ -n $PURGE ]] && pass "(p) purge proposed: $(jpy "$out" "d['messages']") messages" || fail "(p) purge propose: $out"
out=$(SUDO_USER=officer2 mvault purge approve "$PURGE" 2>&1) && pass "(p) approved by a second person and run" || fail "(p) purge approve: $out"
mvault offsite sync >/dev/null 2>&1 || fail "(p) sync after the purge"
verify_clean "(p)" --deep
# Every key in the bucket has exactly one version (no delete marker, no older generation): the
# old packs' bytes, purged messages and all, are gone from the bucket in every form.
offsite_rgw_versions mv-dr packs/ >"$work/versions" 2>/dev/null
left=$(awk '$1 == "deletemarker" {print}' "$work/versions" | wc -l)
dups=$(awk '$1 == "version" {print $2}' "$work/versions" | sort | uniq -d | wc -l)
current=$(offsite_s3req raw GET /mv-dr "list-type=2&prefix=packs/" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g' | sort)
expect_eq "(p) the bucket's versions of packs/ are exactly the current objects, one each, no delete markers" \
  "$(awk '$1 == "version" {print $2}' "$work/versions" | sort | md5sum) $left $dups" "$(md5sum <<<"$current") 0 0"
grep -q '\.g1\.' <<<"$current" && pass "(p) the rewritten packs (generation 1) are offsite" || fail "(p) no generation 1 pack offsite: $current"
index_after=$(index_keys)
[[ -n $index_after && $index_after != "$index_before" ]] && pass "(p) the index snapshot taken before the purge was replaced by one taken after it" ||
  fail "(p) index snapshot not replaced: before '$index_before', after '$index_after'"
part_done p

########################################################################################
# (m) a multipart upload interrupted (the gateway killed after its first part) resumes: the
#     parts the server holds are not sent again
########################################################################################
M=$work/mp MCONF=$work/mp.conf
printf 'seal-bytes = 7340032\n[offsite mp]\nurl = s3://127.0.0.1:%s/mv-mp\nno-tls = yes\ncredentials-file = %s\nmultipart-threshold = 5M\nparallel = 1\nstall-timeout = 10\nindex-snapshot-interval = 0\n' \
  "$S3_PROXY" "$work/s3/s3.cred" >"$MCONF"
mm() { timeout -s KILL 600 "$MV" --vault "$M" --key-file "$K" --config "$MCONF" "$@"; }
mm init >/dev/null 2>&1
mm import -q --custodian erin@corp.example $(find "$corpus/cur" -type f | sort) >/dev/null 2>&1
sealed=$(stat -c %s "$M/packs/00000001.pack" 2>/dev/null || echo 0)
((sealed >= 7340032)) && pass "(m) a sealed pack of $sealed bytes" || fail "(m) no sealed pack of 7 MiB ($sealed)"
offsite_proxy_throttle 1048576
up_start=$(offsite_proxy_stats | grep -o 'up=[0-9]*' | tr -dc 0-9)
mm offsite sync >"$work/mp.out" 2>&1 &
mp_pid=$!
# Part 1 (5 MiB) takes 5 s at 1 MiB/s: kill the gateway once 6 MiB went through the proxy (part 2
# on its way), however long the command took to start.
for _ in $(seq 300); do
  up=$(offsite_proxy_stats | grep -o 'up=[0-9]*' | tr -dc 0-9)
  ((up - up_start > 6 * 1048576)) && break
  sleep 0.1
done
offsite_kill_rgw
wait "$mp_pid" && fail "(m) the sync did not fail" || pass "(m) gateway killed after the first part: the sync fails"
ls "$M"/offsite/mp/uploads/*.upload >/dev/null 2>&1 && pass "(m) the unfinished upload is remembered" || fail "(m) no upload state in $M/offsite/mp/uploads"
offsite_proxy_restore
offsite_restart_rgw || fail "(m) restarting the gateway"
up0=$(offsite_proxy_stats | grep -o 'up=[0-9]*' | tr -dc 0-9)
out=$(mm offsite sync 2>&1) && pass "(m) the sync finishes" || fail "(m) resumed sync: $out"
up1=$(offsite_proxy_stats | grep -o 'up=[0-9]*' | tr -dc 0-9)
sent=$((up1 - up0))
# Everything the sync sent (the pack's second part, the open pack, state, manifest) is less than
# the sealed pack alone: its first part was not sent again.
((sent < sealed)) && pass "(m) the resumed sync sent $sent bytes in all, less than the pack's $sealed: part 1 was not sent again" ||
  fail "(m) the resumed upload sent $sent bytes for a pack of $sealed"
out=$(mm offsite verify --deep 2>&1) && pass "(m) offsite verify --deep is clean" || fail "(m) verify: $out"
ls "$M"/offsite/mp/uploads/*.upload >/dev/null 2>&1 && fail "(m) the finished upload's state was left behind" || pass "(m) no upload state left"
part_done m

########################################################################################
# (d) the DR drill
########################################################################################
mvault offsite sync >/dev/null 2>&1 || fail "(d) final sync"
mvault list --json >"$work/before.list" 2>/dev/null
n_before=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/before.list" 2>/dev/null || echo 0)
((n_before >= 1500)) && pass "(d) before: the vault lists $n_before messages" || fail "(d) before: list --json gave $n_before messages"
for w in $words; do echo "$w $("$MV" --vault "$V" --key-file "$K" count "$w" 2>/dev/null)"; done >"$work/before.counts"
mvault user list >"$work/before.users" 2>&1
mvault audit verify >"$work/before.audit" 2>&1 || fail "(d) audit verify before"
rm -rf "$V"
pass "(d) the vault directory is gone"
dr() {  # dr DIR ARGS...
  "$MV" dr restore --vault "$1" --key-file "$K" "${@:2}" >"$work/dr.out" 2>&1
}
t0=$SECONDS
if dr "$V" --from "s3://127.0.0.1:$MV_S3_PORT/mv-dr" --credentials-file "$work/s3/s3.cred" --no-tls; then
  pass "(d) dr restore from S3 ($((SECONDS - t0)) s): $(tail -n 1 "$work/dr.out")"
  grep -q 'index from the offsite snapshot' "$work/dr.out" && pass "(d) the index came from the offsite snapshot and was caught up" ||
    fail "(d) the index was not taken from the snapshot: $(grep -i index "$work/dr.out")"
else
  fail "(d) dr restore from S3: $(tail -n 5 "$work/dr.out")"
fi
mvault list --json >"$work/after.list" 2>/dev/null
ids() { python3 -c 'import json,sys; print("\n".join(sorted(m["id"] for m in json.load(open(sys.argv[1])))))' "$1"; }
expect_eq "(d) the restored vault lists the same messages" "$(ids "$work/after.list" | md5sum)" "$(ids "$work/before.list" | md5sum)"
# Every message's bytes, exported as a Maildir (one file per message, as stored): the SHA-256 of
# each file must be an id of the list (the ids are the SHA-256 of the raw files, the oracle).
mvault export --to maildir "$work/exported" >/dev/null 2>&1 || fail "(d) export of the restored vault"
find "$work/exported" -type f -exec sha256sum {} + | awk '{print $1}' | sort >"$work/exported.sha"
bad=$(comm -3 "$work/exported.sha" <(ids "$work/after.list") | wc -l)
n_after=$(ids "$work/after.list" | wc -l)
((n_after == n_before)) && ((bad == 0)) && pass "(d) each of the $n_after restored messages reads back with its SHA-256 (its id)" ||
  fail "(d) $bad of $n_after restored messages do not read back with their SHA-256 (before: $n_before)"
expect_eq "(d) every corpus file of the first 1,500 is in the restored vault" \
  "$(comm -23 "$work/oracle.ids" <(ids "$work/after.list") | wc -l)" 0
for w in $words; do echo "$w $("$MV" --vault "$V" --key-file "$K" count "$w" 2>/dev/null)"; done >"$work/after.counts"
expect_eq "(d) the same search counts" "$(cat "$work/after.counts")" "$(cat "$work/before.counts")"
expect_eq "(d) the same users" "$(mvault user list 2>&1)" "$(cat "$work/before.users")"
mvault audit verify >"$work/after.audit" 2>&1 && pass "(d) audit verify is clean after the restore" || fail "(d) audit verify: $(tail -n 3 "$work/after.audit")"
echo "op1-secret-12345" >/dev/null
mvault verify >/dev/null 2>&1 && pass "(d) verify is clean" || fail "(d) verify"
# From SFTP, into another directory.
if dr "$work/v2" --from "$MV_SFTP_URL" --identity-file "$MV_SFTP_IDENTITY" --known-hosts "$MV_SFTP_KNOWN_HOSTS"; then
  "$MV" --vault "$work/v2" --key-file "$K" list --json >"$work/v2.list" 2>/dev/null
  expect_eq "(d) dr restore from SFTP: the same messages" "$(ids "$work/v2.list" | md5sum)" "$(ids "$work/before.list" | md5sum)"
else
  fail "(d) dr restore from SFTP: $(tail -n 5 "$work/dr.out")"
fi
# verify --repair: a pack deleted here comes back from offsite.
victim=$(find "$V/packs" -name '*.pack' | sort | head -n 1)
want=$(sha256sum <"$victim")
rm -f "$victim"
out=$(mvault verify --repair 2>&1) && pass "(d) verify --repair: $(head -n 1 <<<"$out")" || fail "(d) verify --repair: $out"
expect_eq "(d) the repaired pack is byte for byte the one deleted" "$(sha256sum <"$victim" 2>/dev/null)" "$want"
part_done d

((failures == 0)) && echo "offsite_test: all passed" || echo "offsite_test: $failures failed"
((failures == 0))
