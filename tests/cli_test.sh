#!/usr/bin/env bash
# End-to-end test of the `mailvault` command on real mail: every subcommand, the bad inputs of
# the vault issue, and the exit codes scripts rely on. Oracle: the corpus files themselves.
#   cli_test.sh PATH_TO_MAILVAULT    (needs MAILVAULT_CORPUS, the corpus Maildir)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MV=$1
# The caller's umask must not decide who can read the vault (issue 13 item 9): run with a
# permissive one and check every file and directory the commands create below.
umask 022
: "${MAILVAULT_CORPUS:?set MAILVAULT_CORPUS to the corpus Maildir (scripts/test.sh does)}"
cli_setup  # $T, removed at exit; mv ARGS... on the vault $T/v; fail (lib.sh) stops the test

# A sample: 300 corpus messages, a subtree with an mbox, an .eml and bad files.
mkdir -p "$T/in/Maildir/cur" "$T/in/Maildir/new" "$T/in/Maildir/tmp" "$T/in/other"
mapfile -t corpus < <(ls "$MAILVAULT_CORPUS/cur")
for f in "${corpus[@]:0:300}"; do cp "$MAILVAULT_CORPUS/cur/$f" "$T/in/Maildir/cur/"; done
first=${corpus[0]}
{ printf 'From a@b Mon Jan  1 00:00:00 2024\n'; printf 'Subject: in an mbox\nMessage-ID: <mbox1@x>\n\n>From escaped\nbody\n\n';
  printf 'From a@b Mon Jan  1 00:00:00 2024\n'; printf 'Subject: second in mbox\nMessage-ID: <mbox2@x>\n\nbody\n\n'; } > "$T/in/other/box.mbox"
printf 'Subject: single eml\nMessage-ID: <eml@x>\n\nbody\n' > "$T/in/other/one.eml"
: > "$T/in/other/empty.eml"
head -c 4096 /dev/urandom > "$T/in/other/random.bin"; printf '\0' >> "$T/in/other/random.bin"
# cut off in the middle of its attachment (imported on its own below: mbox cannot carry a
# message that does not end in a newline)
mkdir -p "$T/cut"
printf 'From: a@x\nSubject: cut\nMessage-ID: <cut@x>\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nhi\n--zz\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLj' > "$T/cut/truncated.eml"

# --help everywhere
for c in init import list show cat export verify stats rebuild; do "$MV" "$c" --help >/dev/null || fail "$c --help"; done

# a config file with a mistake names the line
printf 'vault = %s\nbogus = 1\n' "$T/v" > "$T/bad.conf"
out=$("$MV" --config "$T/bad.conf" list 2>&1) && fail "a bad config was accepted"
grep -q 'bad.conf:2: unknown setting "bogus"' <<<"$out" || fail "config error: $out"

# commands before init say what to do
out=$(mv list 2>&1) && fail "list without a vault succeeded"
grep -q "mailvault --vault .* init" <<<"$out" || fail "no hint to init: $out"

mv init >/dev/null
[ "$(stat -c %a "$T/k")" = 600 ] || fail "key file mode is not 0600"
mv init >/dev/null 2>&1 && fail "second init succeeded"

set +e
mv import "$T/in" >"$T/import.out" 2>"$T/import.err"; rc=$?
set -e
[ $rc -eq 3 ] || fail "import with bad files should exit 3, got $rc"
grep -q "imported 303 new messages, 0 duplicates, 2 rejected in" "$T/import.out" || fail "summary: $(cat "$T/import.out")"
grep -q "empty.eml: the file is empty" "$T/import.err" || fail "empty file not reported: $(cat "$T/import.err")"
grep -q "random.bin: the file holds binary data" "$T/import.err" || fail "binary file not reported"
"$MV" --vault "$T/v3" --key-file "$T/k3" init >/dev/null
"$MV" --vault "$T/v3" --key-file "$T/k3" import "$T/cut" >"$T/cut.out" 2>"$T/cut.err"
grep -q "imported 1 new messages, 0 duplicates, 0 rejected, 1 stored with warnings" "$T/cut.out" || fail "cut: $(cat "$T/cut.out")"
grep -q "truncated.eml: stored, but the message looks truncated" "$T/cut.err" || fail "truncated file not reported: $(cat "$T/cut.err")"
"$MV" --vault "$T/v3" --key-file "$T/k3" cat "$(sha256sum < "$T/cut/truncated.eml" | cut -d' ' -f1)" | cmp - "$T/cut/truncated.eml" || fail "truncated file not kept byte for byte"

# re-import: only duplicates, and the packs do not grow by a byte (the whole-corpus size check
# is in corpus_test)
before=$(du -sb "$T/v/packs" | cut -f1)
mv import "$T/in/Maildir" | grep -q "imported 0 new messages, 300 duplicates" || fail "re-import"
after=$(du -sb "$T/v/packs" | cut -f1)
[ "$after" -eq "$before" ] || fail "re-import grew the packs from $before to $after"

# list / show / cat against the files
[ "$(mv list | wc -l)" -eq 303 ] || fail "list count"
mv list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d)==303 and all(len(m["id"])==64 for m in d)' || fail "list --json"
id=$(sha256sum "$T/in/Maildir/cur/$first" | cut -d' ' -f1)
mv cat "$id" | cmp - "$T/in/Maildir/cur/$first" || fail "cat is not byte-identical"
mv cat "${id:0:10}" | cmp - "$T/in/Maildir/cur/$first" || fail "cat by prefix"
mv show "$id" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["sha256"]==sys.argv[1] and d["envelopes"] and d["parts"], d' "$id" || fail "show --json"
mv show "$id" | grep -q "^stored in:" || fail "show"
{ mv show deadbeef00 2>&1 || true; } | grep -q "no message id starts with" || fail "unknown id message"
mbox_id=$(printf 'Subject: in an mbox\nMessage-ID: <mbox1@x>\n\nFrom escaped\nbody\n' | sha256sum | cut -d' ' -f1)
mv cat "$mbox_id" >/dev/null || fail "mboxrd unescaping: message not found by its unescaped hash"

# export to mbox and Maildir, then import the export into a second vault: same ids
mv export --to mbox "$T/out.mbox" >/dev/null
mv export --to maildir "$T/outdir" >/dev/null
[ "$(ls "$T/outdir/cur" | wc -l)" -eq 303 ] || fail "maildir export count"
"$MV" --vault "$T/v2" --key-file "$T/k2" init >/dev/null
"$MV" --vault "$T/v2" --key-file "$T/k2" import "$T/out.mbox" | grep -q "imported 303 new" || fail "re-import of the mbox export"
diff <(mv list --json | python3 -c 'import json,sys; print("\n".join(sorted(m["id"] for m in json.load(sys.stdin))))') \
     <("$MV" --vault "$T/v2" --key-file "$T/k2" list --json | python3 -c 'import json,sys; print("\n".join(sorted(m["id"] for m in json.load(sys.stdin))))') \
  || fail "mbox export did not round-trip every message"

# reading mail from the shell is audited like the REST API (issue 13 item 9): cat is
# message.raw, show message.view, export export.create; the entry is durable before the
# content goes out, and with no audit trail to write to nothing goes out at all
audit_count() { mv audit verify --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["entries"])'; }
a0=$(audit_count)
mv cat "$id" >/dev/null || fail "cat"
mv show "$id" >/dev/null || fail "show"
mv export --to mbox "$T/audited.mbox" "$id" >/dev/null || fail "export one message"
mv audit verify | grep -q "^audit trail ok" || fail "audit verify after cat/show/export: $(mv audit verify 2>&1)"
a1=$(audit_count)
[ "$a1" -eq $((a0 + 3)) ] || fail "cat/show/export recorded $((a1 - a0)) audit entries, not 3"
# (`audit list` records an audit.read of its own before it reads)
mv audit list --json --after-seq "$a0" > "$T/audit.json" || fail "audit list"
python3 - "$T/audit.json" "$id" "$T/audited.mbox" <<'PY' || fail "audit entries: $(cat "$T/audit.json")"
import json, sys
es = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(es) == 4 and es[3]["action"] == "audit.read", es
acts = [(e["action"], e["target"], e["source"]) for e in es[:3]]
assert acts[0] == ("message.raw", sys.argv[2], "cli"), acts
assert acts[1] == ("message.view", sys.argv[2], "cli"), acts
assert acts[2][0] == "export.create" and acts[2][1].endswith("audited.mbox") and acts[2][2] == "cli", acts
assert es[0]["details"]["bytes"] > 0 and es[2]["details"]["messages"] == 1 and es[2]["details"]["format"] == "mbox", es
PY
# no audit trail to write to (its store replaced by a file): nothing is shown or exported
cp -r "$T/v" "$T/vnoaudit"
rm -rf "$T/vnoaudit/state" && : > "$T/vnoaudit/state"
nov() { "$MV" --vault "$T/vnoaudit" --key-file "$T/k" "$@"; }
out=$(nov cat "$id" 2>/dev/null) && fail "cat without an audit trail succeeded"
[ -z "$out" ] || fail "cat without an audit trail wrote the message"
out=$(nov show "$id" 2>/dev/null) && fail "show without an audit trail succeeded"
[ -z "$out" ] || fail "show without an audit trail printed the message"
nov export --to mbox "$T/noaudit.mbox" "$id" >/dev/null 2>&1 && fail "export without an audit trail succeeded"
[ ! -e "$T/noaudit.mbox" ] || fail "export without an audit trail created its file"
rm -rf "$T/vnoaudit"

# stats
mv stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["messages"]==303 and d["duplicates"]==300 and d["stored_bytes"]<d["raw_bytes"], d' || fail "stats"

# verify, then rebuild, then the same answers
mv verify | grep -q "^ok: 303 messages" || fail "verify"
mv list > "$T/list.before"
mv rebuild >/dev/null
mv list > "$T/list.after"
cmp "$T/list.before" "$T/list.after" || fail "list differs after rebuild"
mv cat "$id" | cmp - "$T/in/Maildir/cur/$first" || fail "cat after rebuild"

# the index and everything else in the vault: owner-only, whatever the caller's umask
# (issue 13 item 9: index/ holds plaintext words)
mv index run >/dev/null || fail "index run"
bad=$(find "$T/v" "$T/v2" "$T/v3" \( -type f ! -perm 600 \) -o \( -type d ! -perm 700 \) -printf '%m %p\n')
[ -z "$bad" ] || fail "files or directories in the vault open to group or others (umask 022):
$(head -20 <<<"$bad")"
for k in "$T/k" "$T/k2" "$T/k3"; do [ "$(stat -c %a "$k")" = 600 ] || fail "$k is not 0600"; done

# wrong key
"$MV" --vault "$T/v" --key-file "$T/k2" list >/dev/null 2>"$T/err" && fail "wrong key accepted"
grep -q "does not open the vault" "$T/err" || fail "wrong key message: $(cat "$T/err")"

# the vault in use by another process
mv import "$T/in/Maildir" >/dev/null &
sleep 0.05
out=$(mv list 2>&1 >/dev/null || true)
wait
case "$out" in *"in use by another mailvault process"*|"") ;; *) fail "busy message: $out" ;; esac

# one flipped byte in a pack: verify names the message and exits non-zero
off=$(mv show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_in"]["offset"])')
pack="$T/v/packs/00000001.pack"
python3 - "$pack" $((off + 150)) <<'PY'
import sys
p, o = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(o); b = f.read(1); f.seek(o); f.write(bytes([b[0] ^ 0x40]))
PY
set +e
mv verify >"$T/verify.out" 2>&1; rc=$?
set -e
[ $rc -ne 0 ] || fail "verify passed a flipped byte"
grep -q "BAD message $id" "$T/verify.out" || fail "verify did not name $id: $(cat "$T/verify.out")"
mv cat "$id" >/dev/null 2>&1 && fail "cat returned a corrupt message"

echo "cli end-to-end: all checks passed"
