#!/usr/bin/env bash
# Benchmark peer for mailvault's recovery: mbsync (isync) pushes a Maildir of N corpus
# messages into the INBOX of a user on a private Dovecot (127.0.0.1), then
#   1. a second run (must add nothing: mbsync's sync state),
#   2. a run killed (SIGKILL) halfway and run again (duplicates? X-TUID recovery),
#   3. for scale, the same messages through imap_tool.py: one APPEND per message, and one
#      MULTIAPPEND per 100 messages,
#   4. if Cyrus is available, the same messages appended (imap_tool, CRLF line ends) to a
#      private Cyrus, counting the ones it refuses and why.
# Each mailbox is checked with imap_tool.py verify (every message exactly once, the X-TUID
# header that mbsync adds ignored).
#
# usage: tests/recovery/bench_mbsync.sh [N=500] [MAILDIR_CUR=~/.cache/mailvault/corpus/maildir/cur]
# (as root). Prints the mbsyncrc used and one "result:" line per measurement.
set -uo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"

N=${1:-500}
SRC=${2:-${MAILVAULT_CACHE:-$HOME/.cache/mailvault}/corpus/maildir/cur}
command -v mbsync >/dev/null || { echo "mbsync (isync) is not installed" >&2; exit 1; }
[[ -d $SRC ]] || { echo "no corpus Maildir $SRC (scripts/fetch-corpus.sh)" >&2; exit 1; }

T=$(mktemp -d /tmp/mvbench.XXXXXX)
DV=$T/dovecot CY=$T/cyrus
cleanup() {
  dovecot_stop "$DV" >/dev/null 2>&1
  cyrus_stop "$CY" >/dev/null 2>&1
  if [[ ${MV_KEEP:-0} == 1 ]]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

mapfile -t files < <(find "$SRC" -maxdepth 1 -type f | sort | head -n "$N")
((${#files[@]} == N)) || { echo "only ${#files[@]} messages in $SRC" >&2; exit 1; }
bytes=$(cat "${files[@]}" | wc -c)
echo "input: $N messages, $bytes bytes, from $SRC"

# fresh Maildir copy: mbsync renames the files it numbers (",U=n")
make_maildir() {
  rm -rf "$1"
  mkdir -p "$1/cur" "$1/new" "$1/tmp"
  cp -- "${files[@]}" "$1/cur/"
}

DP=$(free_port)
dovecot_imap_start "$DV" "$DP" || exit 1

# write_rc RC MAILDIR USER
write_rc() { mbsync_push_rc "$1" "$2" "$3" "$DP"; }  # write_rc RC MAILDIR USER

since() { python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$EPOCHREALTIME"; }
rate() { python3 -c 'import sys; print("%.0f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
verify() { # PORT USER PASSWORD [imap_tool verify options]
  local port=$1 user=$2 pass=$3
  shift 3
  imap_tool --port "$port" --user "$user" --password "$pass" verify "$@" "${files[@]}" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("found=%d missing=%d duplicated=%d unexpected=%d" % (d["found"], len(d["missing"]), sum(v-1 for v in d["duplicates"].values()), len(d["unexpected"])))'
}

# 1. mbsync, first and second run (the first one $REPEAT times, into fresh users; then once
# more with "FSync no", to see what mbsync's own fsyncs cost)
REPEAT=${MV_BENCH_REPEAT:-3}
make_maildir "$T/md1"
write_rc "$T/mbsyncrc" "$T/md1" alice@example.test
echo "---- mbsyncrc ----"
cat "$T/mbsyncrc"
echo "------------------"
for ((r = 0; r <= REPEAT; r++)); do
  rc_file=$T/mbsyncrc u=alice@example.test label="mbsync push $N messages"
  if ((r > 0)); then
    make_maildir "$T/md1.$r"
    rc_file=$T/mbsyncrc.$r u=alice$r@example.test
    write_rc "$rc_file" "$T/md1.$r" "$u"
    if ((r == REPEAT)); then
      sed -i '1i FSync no' "$rc_file"
      label="$label, FSync no"
    fi
  fi
  t0=$EPOCHREALTIME
  mbsync -c "$rc_file" -q push >"$T/mbsync1.log" 2>&1
  rc=$? s=$(since "$t0")
  echo "result: $label: exit $rc, ${s} s, $(rate "$N" "$s") msg/s, $(verify "$DP" "$u" "$MV_DOVECOT_USER_PASS" --ignore-header X-TUID)"
  [[ $rc == 0 ]] || sed 's/^/  | /' "$T/mbsync1.log"
done
t0=$EPOCHREALTIME
mbsync -c "$T/mbsyncrc" -q push >"$T/mbsync2.log" 2>&1
rc=$? s=$(since "$t0")
echo "result: mbsync second run: exit $rc, ${s} s, $(verify "$DP" alice@example.test "$MV_DOVECOT_USER_PASS" --ignore-header X-TUID)"
echo "sync state files: $(cd "$T/md1" && echo .mbsyncstate*)"
head -6 "$T/md1/.mbsyncstate" | sed 's/^/  | /'
x=$(imap_tool --port "$DP" --user alice@example.test --password "$MV_DOVECOT_USER_PASS" list-messages --header X-TUID 2>/dev/null | head -1)
echo "first message on the server: $x"

# 2. killed halfway, then run again
make_maildir "$T/md2"
write_rc "$T/mbsyncrc2" "$T/md2" bob@example.test
mbsync -c "$T/mbsyncrc2" -q push >"$T/mbsync3.log" 2>&1 &
mpid=$!
deadline=$((SECONDS + 60))
while :; do
  n=$(imap_tool --port "$DP" --user bob@example.test --password "$MV_DOVECOT_USER_PASS" count 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"])' 2>/dev/null || echo 0)
  ((n >= N / 2 || SECONDS >= deadline)) && break
  kill -0 "$mpid" 2>/dev/null || break
  sleep 0.02
done
kill -9 "$mpid" 2>/dev/null
wait "$mpid" 2>/dev/null
echo "killed mbsync with $n messages on the server; journal: $(wc -l <"$T/md2/.mbsyncstate.journal" 2>/dev/null || echo none) lines"
t0=$EPOCHREALTIME
mbsync -c "$T/mbsyncrc2" push >"$T/mbsync4.log" 2>&1
rc=$? s=$(since "$t0")
echo "result: mbsync rerun after SIGKILL: exit $rc, ${s} s, $(verify "$DP" bob@example.test "$MV_DOVECOT_USER_PASS" --ignore-header X-TUID)"
grep -i -E 'warn|lost|error' "$T/mbsync4.log" | head -5 | sed 's/^/  | /'

# 3. imap_tool: single APPENDs, and MULTIAPPEND in batches of 100
t0=$EPOCHREALTIME
imap_tool --port "$DP" --user carol@example.test --password "$MV_DOVECOT_USER_PASS" append "${files[@]}" >/dev/null
rc=$? s=$(since "$t0")
echo "result: imap_tool one APPEND per message: exit $rc, ${s} s, $(rate "$N" "$s") msg/s, $(verify "$DP" carol@example.test "$MV_DOVECOT_USER_PASS")"
t0=$EPOCHREALTIME
rc=0
for ((i = 0; i < N; i += 100)); do
  imap_tool --port "$DP" --user dave@example.test --password "$MV_DOVECOT_USER_PASS" append --multi "${files[@]:i:100}" >/dev/null || rc=1
done
s=$(since "$t0")
echo "result: imap_tool MULTIAPPEND x100: exit $rc, ${s} s, $(rate "$N" "$s") msg/s, $(verify "$DP" dave@example.test "$MV_DOVECOT_USER_PASS")"

# 4. Cyrus: which of these messages does it refuse?
if cyrus_imapd_path >/dev/null 2>&1; then
  CP=$(free_port)
  if cyrus_start "$CY" "$CP" && cyrus_add_user "$CY" alice@example.test alice-pw; then
    t0=$EPOCHREALTIME
    imap_tool --port "$CP" --user alice@example.test --password alice-pw append --keep-going "${files[@]}" >"$T/cyrus.out"
    s=$(since "$t0")
    echo "result: Cyrus, one APPEND per message: ${s} s, $(rate "$N" "$s") msg/s, $(grep -c '"result": "OK"' "$T/cyrus.out") accepted, $(grep -c '"result": "NO"' "$T/cyrus.out") refused"
    grep '"result": "NO"' "$T/cyrus.out" | python3 -c 'import json,sys,collections; c=collections.Counter(json.loads(l)["text"] for l in sys.stdin); [print("  refused: %d x NO %s" % (n,t)) for t,n in c.most_common()]'
    echo "  (of the accepted: $(verify "$CP" alice@example.test alice-pw --allow-extra))"
  fi
fi
