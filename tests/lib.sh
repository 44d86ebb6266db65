# shellcheck shell=bash
# Shared by the shell test scripts under tests/ (sourced, not run): the ok/FAIL lines and their
# counter, checks, the work directory's fate at exit, and a few small helpers. Source it near
# the top, with a path from the script's own location, so the caller's cwd does not matter:
#   here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   # shellcheck source=../lib.sh
#   source "$here/../lib.sh"    (a script in tests/ itself: "$(dirname "${BASH_SOURCE[0]}")/lib.sh")
# It defines functions and sets failures=0, ok_sep="" and fail_fast=0; it runs nothing else.
# Functions that use a script's variables say which. The servers (free_port, wait_port,
# postfix_start, ...) are in tests/capture/servers.sh and tests/recovery/servers.sh, which do not
# source this file (bench/ sources them too). bench/lib.sh is the benchmarks' counterpart.

# ---- ok / FAIL lines ----
# failures: how many checks failed so far. ok_sep: text after "ok   " / "FAIL " ("- " in
# capture/harness_selftest.sh). fail_fast=1: fail stops the script (cli_setup sets it).
failures=0 ok_sep="" fail_fast=0

# pass MESSAGE: prints "ok   MESSAGE".
pass() { echo "ok   $ok_sep$*"; }
# fail MESSAGE: prints "FAIL MESSAGE" and counts it in failures; with fail_fast=1 prints
# "FAIL: MESSAGE" to stderr and exits 1 instead.
fail() {
  if ((fail_fast)); then
    echo "FAIL: $*" >&2
    exit 1
  fi
  echo "FAIL $ok_sep$*"
  failures=$((failures + 1))
}
# check NAME COMMAND...: passes NAME when COMMAND succeeds, fails it otherwise.
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
# expect_eq LABEL GOT WANT: passes LABEL when GOT is WANT, else fails it naming both.
expect_eq() { if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi; }

# ---- the work directory ----
# keep_or_remove_work MESSAGE [KEEP_VAR]: for the EXIT trap: when a check failed, or the
# environment variable named KEEP_VAR is 1, prints MESSAGE (and keeps $work); else rm -rf $work.
keep_or_remove_work() {
  # shellcheck disable=SC2154  # work: the script's
  if ((failures)) || [[ -n ${2:-} && ${!2:-0} == 1 ]]; then echo "$1"; else rm -rf "$work"; fi
}
# cli_setup: the start of cli_test.sh and index_cli_test.sh: a scratch directory $T (removed at
# exit), fail_fast=1, and mv ARGS... = "$MV" --vault "$T/v" --key-file "$T/k" ARGS... (a function
# that hides mv(1), hence only there).
cli_setup() {
  T=$(mktemp -d)
  trap 'rm -rf "$T"' EXIT
  fail_fast=1
  # shellcheck disable=SC2317  # called by the script
  mv() { "$MV" --vault "$T/v" --key-file "$T/k" "$@"; }
}

# ---- mailvault ----
# test_corpus: prints the corpus Maildir: $MAILVAULT_CORPUS, else ~/.cache/mailvault/corpus/maildir.
test_corpus() { printf '%s\n' "${MAILVAULT_CORPUS:-$HOME/.cache/mailvault/corpus/maildir}"; }
# mailvault_admin BIN: prints the path of the mailvault-admin beside the mailvault binary BIN.
mailvault_admin() { printf '%s\n' "$(dirname "$1")/mailvault-admin"; }
# links_asan FILE...: true when one of the FILEs is linked with AddressSanitizer (ldd: libasan).
links_asan() {
  local f
  for f; do ldd "$f" | grep -q libasan && return 0; done
  return 1
}
# mvault ARGS...: "$mv_bin" --vault "$vault" --key-file "$key" ARGS... (the script's variables).
# shellcheck disable=SC2154  # mv_bin, vault, key: the script's
mvault() { "$mv_bin" --vault "$vault" --key-file "$key" "$@"; }

# ---- small things ----
# random_sleep FROM_MS TO_MS: sleeps a random time between FROM_MS and TO_MS milliseconds.
random_sleep() {
  local ms=$(($1 + RANDOM % ($2 - $1 + 1)))
  sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
}
# write_auth FILE LINE...: writes the LINEs to FILE, mode 0600 (a restore target's auth file).
write_auth() {
  local f=$1
  shift
  printf '%s\n' "$@" >"$f"
  chmod 600 "$f"
}
# jpy JSON EXPR: prints the Python expression EXPR with d = the parsed JSON (its last non-empty
# line when the whole does not parse, so progress lines before it do not matter; re and json
# are there too); dicts, lists, booleans and None as JSON; "" on error.
jpy() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null
import json, sys
lines = [l for l in sys.argv[1].splitlines() if l.strip()]
try:
    d = json.loads(sys.argv[1])
except ValueError:
    d = json.loads(lines[-1])
v = eval(sys.argv[2], {"d": d, "re": __import__("re"), "json": json})
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)
PY
}
