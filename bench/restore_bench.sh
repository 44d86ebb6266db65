#!/usr/bin/env bash
# Restore benchmark (issue 7): `mailvault restore` against mbsync pushing the same Maildir into
# a private Dovecot, in one run, on one server:
#   - into empty mailboxes, and
#   - into mailboxes that already hold every second message (delivered over LMTP first, so
#     those copies carry Dovecot's Return-Path / Delivered-To / Received lines),
# with every mailbox checked server-side (each message exactly once), and a second run of the
# same restore, which must append nothing.
#
# usage: bench/restore_bench.sh [N] [--runs R] [--parts LIST] [--keep]
#
#   N                 how many corpus messages (the first N in name order; default: all of
#                     them, 6046 for the SpamAssassin corpus)
#   --runs R          timed runs per case, each into a fresh user (default 3); best and
#                     median are reported
#   --parts LIST      mbsync,mailvault (default both); --parts mbsync needs no mailvault binary
#   --keep            keep the temporary directory (Maildirs, vault, Dovecot mail and logs)
#
# Environment:
#   MV                mailvault binary (default <repo>/build/release/cli/mailvault; MAILVAULT_BIN
#                     is read too)
#   MAILVAULT_CORPUS  the corpus Maildir (default ~/.cache/mailvault/corpus/maildir, made by
#                     scripts/fetch-corpus.sh); its cur/ holds the messages
#   RESTORE_FROM      the restore window's start (default 2000-01-01T00:00:00Z)
#   MV_RESTORE_EXTRA  extra arguments appended to every `mailvault restore` (word-split)
#   TMPDIR            where everything goes (keep it short: Dovecot's sockets live below it)
#
# Needs root (Dovecot's master starts as root), python3, mbsync (isync), dovecot-core,
# dovecot-imapd, dovecot-lmtpd. Installs nothing; creates the user mvtest for Dovecot's mail if
# missing (tests/capture/servers.sh).
#
# What it does, in this order, on one private Dovecot (tests/recovery/servers.sh
# dovecot_imap_start: IMAP + LMTP on 127.0.0.1, maildir, mail_fsync = optimized):
#  0. Maildir M of the N messages; for the half-full cases, every second message (1st, 3rd,
#     ...) is delivered over LMTP (one connection per user, one single-recipient transaction
#     per message) to every half-full user before anything is timed. Then, with --parts
#     mailvault: `MV --vault V --key-file K init`, `MV ... import --custodian
#     alice@example.test M` (timed, info).
#  1. mbsync, empty: R runs, user mbN@example.test, a fresh copy of M each run,
#     `mbsync -c RC -q push` (RC as in tests/recovery/bench_mbsync.sh: Sync Push, Create Far,
#     Expunge None, SyncState *, LOGIN without TLS).
#  2. mbsync, half-full: the same into users mbhN (pre-filled). mbsync does not deduplicate
#     against what the mailbox holds, so the pre-filled half ends up there twice (info).
#  3. mailvault restore, empty: R runs, each to a fresh user mveN through --map:
#       MV --vault V --key-file K restore --to imap://127.0.0.1:PORT --no-tls --auth-file F
#          --users alice@example.test --map alice@example.test=mveN@example.test
#          --from $RESTORE_FROM --json
#     F (mode 0600) holds "* mvmaster mvmaster-secret" (Dovecot's master user).
#  4. mailvault restore, half-full: the same to users mvhN (pre-filled), then the very same
#     command once more, which must append nothing.
# Rates are N / wall-clock seconds of the whole command (process start to exit), i.e. the
# whole set over the time the job takes, also when half of it was already there.
#
# The restore window (--from) applies to when the archive captured the mail, here the import,
# so the default selects all N (with --by-date in MV_RESTORE_EXTRA, 72 corpus messages have
# no Date or one before 2000).
#
# Checks (server-side, after each run): every message of M in INBOX exactly once:
# tests/recovery/imap_tool.py verify (SHA-256 of the bytes, the file with CRLF line ends, the
# server copy without X-TUID, which mbsync adds, and X-Mailvault-Restore, the restore marker);
# for the half-full mailboxes `verify --match delivered`, so the copies delivered over LMTP
# count (without that option in imap_tool.py, the helper below strips exactly Dovecot's
# Return-Path / Delivered-To / Received "with LMTP" lines instead). Also dovecot_count
# (doveadm) = N, the restore's --json report (status done, failed 0, selected N, appended =
# what was missing), and after the second run: appended 0 and the count unchanged.
#
# Output: Markdown (host, versions, the runs, the results table with PASS/MISS for the speed
# targets and PASS/FAIL for the correctness checks), then one "restore_bench-summary:" line.
# Exit status: 0 all correctness checks passed (speed targets may MISS), 1 a correctness
# check failed, 2 setup or tool error.
set -euo pipefail


script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
bench_name=restore_bench
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"
export LC_ALL=C  # '.' as the decimal point in $EPOCHREALTIME and awk

n_arg='' runs=3 parts='mbsync,mailvault' keep=0
while (($#)); do
  case $1 in
    --runs|--parts) (($# >= 2)) || die "$1 needs a value"; v=${1#--}; printf -v "$v" '%s' "$2"; shift 2 ;;
    --runs=*|--parts=*) v=${1%%=*}; v=${v#--}; printf -v "$v" '%s' "${1#*=}"; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) die "unknown option: $1 (try --help)" ;;
    *) [[ -z $n_arg ]] || die "one N at most, got '$n_arg' and '$1'"; n_arg=$1; shift ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"
[[ -z $n_arg || $n_arg =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$n_arg'"
declare -A want=()
IFS=',' read -r -a part_list <<<"$parts"
for p in "${part_list[@]}"; do
  case $p in
    mbsync|mailvault) want[$p]=1 ;;
    '') ;;
    *) die "unknown part '$p' in --parts (choose from mbsync,mailvault)" ;;
  esac
done
((${#want[@]})) || die "--parts selects nothing"
has() { [[ -n ${want[$1]:-} ]]; }

# ---- prerequisites (checked before anything runs) --------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
((EUID == 0)) || die "needs root (Dovecot's master starts as root and drops privileges)"
command -v python3 >/dev/null || die "python3 not found"
{ command -v dovecot >/dev/null && command -v doveadm >/dev/null; } ||
  die "dovecot/doveadm not found: install the Debian packages dovecot-core, dovecot-imapd, dovecot-lmtpd"
[[ -x /usr/lib/dovecot/lmtp ]] || die "/usr/lib/dovecot/lmtp not found: install dovecot-lmtpd"
[[ -x /usr/lib/dovecot/imap ]] || die "/usr/lib/dovecot/imap not found: install dovecot-imapd"
if has mbsync; then command -v mbsync >/dev/null || die "mbsync not found: install the Debian package isync"; fi
mv_bin=${MV:-${MAILVAULT_BIN:-$repo_root/build/release/cli/mailvault}}
if has mailvault; then
  [[ -f $mv_bin && -x $mv_bin ]] ||
    die "mailvault binary not found or not executable: $mv_bin (build it, or set MV; --parts mbsync runs without it)"
  mv_bin=$(cd "$(dirname "$mv_bin")" && pwd -P)/$(basename "$mv_bin")
  "$mv_bin" restore --help >/dev/null 2>&1 ||
    die "$mv_bin has no 'restore' subcommand (issue 7); build a newer one, or run --parts mbsync"
fi
corpus=${MAILVAULT_CORPUS:-${MAILVAULT_CACHE:-$HOME/.cache/mailvault}/corpus/maildir}
[[ -d $corpus/cur ]] || die "no corpus Maildir at $corpus (run scripts/fetch-corpus.sh, or set MAILVAULT_CORPUS)"
restore_from=${RESTORE_FROM:-2000-01-01T00:00:00Z}
read -r -a restore_extra <<<"${MV_RESTORE_EXTRA:-}"
custodian=alice@example.test

# shellcheck source=tests/recovery/servers.sh
source "$repo_root/tests/recovery/servers.sh"

# ---- scratch space, report helpers (bench/lib.sh) ---------------------------------------------
label_width=58
bench_scratch mailvault-restore-bench
chmod 755 "$work"
dv=$work/dv
# shellcheck disable=SC2317  # called by the EXIT trap
stop_all() { dovecot_stop "$dv" >/dev/null 2>&1 || true; }
trap 'stop_all; bench_cleanup' EXIT
odd_log=$work/odd-log-lines
: >"$odd_log"

# goal LABEL VALUE OP LIMIT: a speed target row, PASS or MISS (a MISS does not fail the run)
goal() {
  local verdict=MISS
  if [[ -z $2 ]]; then verdict=SKIP
  elif awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=" && v >= l) || (op == "<=" && v <= l)) }'; then verdict=PASS
  fi
  printf "| %-${label_width}s | %12s | %-14s | %-4s |\n" "$1" "${2:-n/a}" "$3 $4" "$verdict"
}

# ---- the python helper: LMTP pre-fill, server-side verify, restore report -------------------
helper=$work/restore_helper.py
cat >"$helper" <<'EOF'
"""restore_bench helper. Commands:
  fill PORT FILELIST USER...     deliver every file over LMTP to each USER (a thread and one
                                 connection per user, one single-recipient transaction per file)
  verify PORT USER FILELIST [IGNORE...]
                                 is every file in USER's INBOX exactly once (a copy delivered
                                 over LMTP counts)? prints JSON; used when imap_tool.py has no
                                 verify --match delivered
  report FILE                    key=value lines from a `mailvault restore --json` output
  summary FILE                   one line from an `imap_tool.py verify` report (JSON)"""
import argparse, hashlib, json, os, re, socket, sys, threading

sys.path.insert(0, os.environ["RB_RECOVERY_DIR"])
import imap_tool as it  # noqa: E402  (tests/recovery/imap_tool.py: login, fetch_messages, crlf, strip_headers)

PASS = os.environ.get("MV_DOVECOT_USER_PASS", "mvtest")
# Dovecot's LMTP delivery puts these in front of the message: Return-Path (from MAIL FROM),
# Delivered-To (single-recipient transactions only), Received ... with LMTP ... (folded)
DELIVERY_RE = re.compile(rb"\AReturn-Path:[^\r\n]*\r\n(?:Delivered-To:[^\r\n]*\r\n)?"
                         rb"(Received:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)")


def files_of(path):
    return [l for l in open(path).read().splitlines() if l]


def fill(port, files, users):
    msgs = []
    for f in files:
        d = it.crlf(open(f, "rb").read())
        if not d.endswith(b"\r\n"):
            d += b"\r\n"
        msgs.append(re.sub(rb"(?m)^\.", b"..", d) + b".\r\n")
    errors = []

    def reply(rf):
        lines = []
        while True:
            ln = rf.readline()
            if not ln:
                raise OSError("connection closed")
            lines.append(ln)
            if ln[3:4] != b"-":
                return lines[-1][:3], b"".join(lines)

    def worker(user):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=120)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rf = s.makefile("rb")
            code, t = reply(rf)
            s.sendall(b"LHLO restore-bench.test\r\n")
            code, t = reply(rf)
            env = b"MAIL FROM:<sender@example.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % user.encode()
            for i, m in enumerate(msgs):
                s.sendall(env)  # pipelined (Dovecot's LMTP has PIPELINING)
                for want in (b"250", b"250", b"354"):
                    code, t = reply(rf)
                    if code != want:
                        raise OSError("file %s: %r" % (files[i], t))
                s.sendall(m)
                code, t = reply(rf)
                if code != b"250":
                    raise OSError("file %s: %r" % (files[i], t))
            s.sendall(b"QUIT\r\n")
            s.close()
        except Exception as e:  # noqa: BLE001 - reported
            errors.append("%s: %s" % (user, e))

    th = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for e in errors:
        print("restore_bench: LMTP pre-fill: " + e, file=sys.stderr)
    return 1 if errors else 0


def verify(port, user, files, ignore):
    want = {}
    for f in files:
        want.setdefault(hashlib.sha256(it.crlf(open(f, "rb").read())).hexdigest(), []).append(f)
    a = argparse.Namespace(host="127.0.0.1", port=port, user=user, password=PASS, authzid=None,
                           timeout=300, nagle=False)
    c = it.login(a)
    seen, found, exact, delivered, unexpected = {}, 0, 0, 0, []
    for m in it.fetch_messages(c, "INBOX"):
        found += 1
        raw = it.strip_headers(m["raw"], ignore)
        h = hashlib.sha256(raw).hexdigest()
        if h in want:
            exact += 1
        else:
            d = DELIVERY_RE.match(raw)
            h = hashlib.sha256(raw[d.end():]).hexdigest() if d and b" with LMTP" in d.group(1) else None
            if h not in want:
                unexpected.append(m["uid"])
                continue
            delivered += 1
        seen[h] = seen.get(h, 0) + 1
    c.logout()
    missing, dups = [], 0
    for h, fs in want.items():
        n = seen.get(h, 0)
        missing.extend(fs[n:])
        dups += max(0, n - len(fs))
    print(json.dumps({"user": user, "expected": len(files), "found": found, "exact": exact,
                      "delivered": delivered, "missing": len(missing), "duplicates": dups,
                      "unexpected": len(unexpected), "missing_sample": [os.path.basename(f) for f in missing[:5]],
                      "unexpected_uids_sample": unexpected[:5]}))
    return 0


def report(path):
    text = open(path, errors="replace").read()
    try:
        d = json.loads(text)
    except ValueError:
        d = None
        for ln in reversed(text.splitlines()):
            if ln.lstrip().startswith("{"):
                try:
                    d = json.loads(ln)
                    break
                except ValueError:
                    pass
    if not isinstance(d, dict):
        print("parsed=no")
        return 0
    t = d.get("totals") or {}
    print("parsed=yes")
    print("job=%s" % d.get("job", ""))
    print("status=%s" % d.get("status", ""))
    for k in ("selected", "present", "appended", "failed"):
        v = t.get(k)
        print("%s=%s" % (k, v if isinstance(v, int) and not isinstance(v, bool) else ""))
    return 0


def summary(path):
    """imap_tool's verify report -> the counts this script uses (same keys as verify above)."""
    d = json.load(open(path))
    dups = d.get("duplicates", {})
    if isinstance(dups, dict):  # imap_tool: {FILE: times found}
        dups = sum(max(0, n - 1) for n in dups.values())
    miss = d.get("missing", [])
    unexp = d.get("unexpected", [])
    out = {"found": d.get("found"), "missing": len(miss) if isinstance(miss, list) else miss,
           "duplicates": dups, "unexpected": len(unexp) if isinstance(unexp, list) else unexp}
    for k in ("exact", "delivered"):
        if k in d:
            out[k] = d[k]
    if "by_parts" in d:
        out["by_parts"] = len(d["by_parts"])
    if isinstance(d.get("duplicates"), dict) and d["duplicates"]:
        out["duplicates_sample"] = [os.path.basename(f) for f in list(d["duplicates"])[:5]]
    if out["missing"]:
        out["missing_sample"] = [os.path.basename(f) for f in (miss if isinstance(miss, list) else d.get("missing_sample", []))[:5]]
    print(json.dumps(out))
    return 0


def main(av):
    cmd = av[0]
    if cmd == "fill":
        return fill(int(av[1]), files_of(av[2]), av[3:])
    if cmd == "verify":
        return verify(int(av[1]), av[2], files_of(av[3]), av[4:])
    if cmd == "report":
        return report(av[1])
    if cmd == "summary":
        return summary(av[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (it.ToolError, OSError) as e:
        print("restore_bench helper %s: %s" % (sys.argv[1], e), file=sys.stderr)
        sys.exit(2)
EOF
helper() { RB_RECOVERY_DIR=$repo_root/tests/recovery python3 "$helper" "$@"; }

# ---- 0. the input Maildir, the pre-filled half ----------------------------------------------
mapfile -t src < <(find "$corpus/cur" -maxdepth 1 -type f | sort)
((${#src[@]})) || die "no messages in $corpus/cur"
n=${n_arg:-${#src[@]}}
((n <= ${#src[@]})) || die "N = $n, but $corpus/cur holds only ${#src[@]} messages"
maildir=$work/maildir
mkdir -p "$maildir/cur" "$maildir/new" "$maildir/tmp"
cp -- "${src[@]:0:n}" "$maildir/cur/"
find "$maildir/cur" -type f | sort >"$work/all.list"
awk 'NR % 2 == 1' "$work/all.list" >"$work/half.list"   # 1st, 3rd, ...: delivered first
n_half=$(wc -l <"$work/half.list")
raw_bytes=$(find "$maildir/cur" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
log "input: $n messages ($raw_bytes bytes) from $corpus/cur; $n_half of them pre-filled over LMTP into each half-full mailbox"

# a fresh copy of the Maildir for mbsync (it renames the files it pushes and keeps its state there)
md_copy() { rm -rf "$1"; cp -a "$maildir" "$1"; }

imap_port=$(free_port) lmtp_port=$(free_port)
dovecot_imap_start "$dv" "$imap_port" "$lmtp_port" || die "could not start Dovecot (see above)"
log "Dovecot: IMAP 127.0.0.1:$imap_port, LMTP 127.0.0.1:$lmtp_port ($dv)"

half_users=()
for ((r = 1; r <= runs; r++)); do
  if has mbsync; then half_users+=("mbh$r@example.test"); fi
  if has mailvault; then half_users+=("mvh$r@example.test"); fi
done
t0=$EPOCHREALTIME
helper fill "$lmtp_port" "$work/half.list" "${half_users[@]}" || die "the LMTP pre-fill failed"
fill_sec=$(since "$t0")
fill_rate=$(calc '%.0f' "$n_half * ${#half_users[@]} / $fill_sec")
for u in "${half_users[@]}"; do
  c=$(dovecot_count "$dv" "$u") || die "dovecot_count $u failed"
  ((c == n_half)) || die "$u holds $c messages after the LMTP pre-fill, expected $n_half"
done
log "pre-filled ${#half_users[@]} mailboxes with $n_half messages each over LMTP in ${fill_sec}s ($fill_rate deliveries/s)"

# ---- result bookkeeping -----------------------------------------------------------------------
# case keys: mb_empty mb_half mv_empty mv_half; rates[k] = "r1 r2 ..." (msgs/s)
declare -A rates=() secs=() bad=()
declare -A tot_dup=() tot_miss=() tot_unexp=() tot_parts=()
# imap_tool.py verify --match delivered (a copy that went through a delivery counts) is new;
# without it the helper's verify does the half-full checks
if imap_tool --help 2>/dev/null | grep -q -- '--match delivered'; then match_delivered=1; else match_delivered=0; fi
# vcheck CASE USER LABEL EXPECT_COUNT full|half [IGNORE_HEADER...]: server-side check of USER's
# INBOX against every message of the Maildir; adds its duplicates / missing / unexpected (and
# copies matched only by decoded parts) to CASE's totals; a count other than EXPECT_COUNT
# (doveadm) is a problem of CASE
vcheck() {
  local k=$1 u=$2 label=$3 want_count=$4 kind=$5 out=$work/verify-${2%@*}.json cnt h bp rc=0
  local -a ign=()
  shift 5
  for h in "$@"; do ign+=(--ignore-header "$h"); done
  if [[ $kind == full ]] || ((match_delivered)); then
    local -a m=()
    [[ $kind == full ]] || m=(--match delivered)
    # shellcheck disable=SC2046  # one file name per line, no blanks in them
    imap_tool --port "$imap_port" --user "$u" --password "$MV_DOVECOT_USER_PASS" --timeout 300 \
      verify "${m[@]}" "${ign[@]}" $(cat "$work/all.list") >"$out.raw" 2>"$out.err" || rc=$?
    ((rc <= 1)) || die "imap_tool verify of $u failed: $(cat "$out.err")"
    helper summary "$out.raw" >"$out" || die "cannot read the verify report $out.raw"
  else
    helper verify "$imap_port" "$u" "$work/all.list" "$@" >"$out" || die "verify of $u failed"
  fi
  cnt=$(dovecot_count "$dv" "$u") || die "dovecot_count $u failed"
  tot_dup[$k]=$((${tot_dup[$k]:-0} + $(json_get "$out" duplicates)))
  tot_miss[$k]=$((${tot_miss[$k]:-0} + $(json_get "$out" missing)))
  tot_unexp[$k]=$((${tot_unexp[$k]:-0} + $(json_get "$out" unexpected)))
  bp=$(json_get "$out" by_parts)
  tot_parts[$k]=$((${tot_parts[$k]:-0} + ${bp:-0}))
  log "  $label: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(", ".join("%s %s" % (k, v) for k, v in d.items()))' "$out"), doveadm count $cnt"
  if [[ $cnt != "$want_count" ]]; then
    bad[$k]+="$u holds $cnt messages (expected $want_count); "
  fi
}
record_run() { # record_run CASE SECONDS
  secs[$1]+="$2 "
  rates[$1]+="$(calc '%.1f' "$n / $2") "
}

# ---- 1./2. mbsync ---------------------------------------------------------------------------
write_rc() { mbsync_push_rc "$1" "$2" "$3" "$imap_port"; }  # write_rc RC MAILDIR USER
# mbsync_run CASE USER RUN
mbsync_run() {
  local k=$1 u=$2 r=$3 md=$work/md-$1-$3 rc_file=$work/mbsyncrc-$1-$3 t0 s rc=0
  md_copy "$md"
  write_rc "$rc_file" "$md" "$u"
  sync
  t0=$EPOCHREALTIME
  mbsync -c "$rc_file" -q push >"$work/mbsync-$k-$r.log" 2>&1 || rc=$?
  s=$(since "$t0")
  if ((rc)); then
    tail -n 20 "$work/mbsync-$k-$r.log" >&2
    die "mbsync ($k, run $r, user $u) exited with status $rc"
  fi
  record_run "$k" "$s"
  log "  mbsync $k run $r: $n messages in ${s}s = $(calc '%.1f' "$n / $s") msgs/s"
  ((keep)) || rm -rf "$md"
}
if has mbsync; then
  log "mbsync into empty mailboxes: $runs run(s), mbsync -c RC -q push"
  for ((r = 1; r <= runs; r++)); do
    mbsync_run mb_empty "mb$r@example.test" "$r"
    vcheck mb_empty "mb$r@example.test" "check mb$r" "$n" full X-TUID
  done
  log "mbsync into half-full mailboxes: $runs run(s)"
  for ((r = 1; r <= runs; r++)); do
    mbsync_run mb_half "mbh$r@example.test" "$r"
    vcheck mb_half "mbh$r@example.test" "check mbh$r" $((n + n_half)) half X-TUID
  done
  cat "$work/mbsyncrc-mb_empty-1" >"$work/mbsyncrc.shown"
fi

# ---- 3./4. mailvault restore ------------------------------------------------------------------
vault=$work/vault key=$work/key authf=$work/restore-auth
import_sec='' stored='' rerun_appended='' rerun_added='' rerun_secs=''
# restore_run CASE USER RUN TAG: times one restore into USER; sets r_sec and rep[] (the report)
restore_run() {
  local k=$1 u=$2 r=$3 tag=$4 t0 rc=0 out=$work/restore-$4.json errf=$work/restore-$4.err
  local -a cmd=("$mv_bin" --vault "$vault" --key-file "$key" restore --to "imap://127.0.0.1:$imap_port" --no-tls
                --auth-file "$authf" --users "$custodian" --map "$custodian=$u" --from "$restore_from" --json
                "${restore_extra[@]}")
  printf '%q ' "${cmd[@]}" >"$work/restore-$tag.cmd"
  sync
  t0=$EPOCHREALTIME
  "${cmd[@]}" >"$out" 2>"$errf" || rc=$?
  r_sec=$(since "$t0")
  declare -gA rep=()
  while IFS='=' read -r kk vv; do rep[$kk]=$vv; done < <(helper report "$out")
  log "  restore $tag: exit $rc, ${r_sec}s ($(calc '%.1f' "$n / $r_sec") msgs/s for the whole set); report: status ${rep[status]:-?}, selected ${rep[selected]:-?}, present ${rep[present]:-?}, appended ${rep[appended]:-?}, failed ${rep[failed]:-?}"
  if ((rc)) || [[ ${rep[parsed]:-} != yes ]]; then
    log "  restore $tag: exit status $rc; last lines of stderr / stdout:"
    tail -n 10 "$errf" | sed 's/^/  | /' >&2
    tail -n 5 "$out" | sed 's/^/  | /' >&2
    bad[$k]+="restore $tag exited $rc$([[ ${rep[parsed]:-} == yes ]] || echo ', no JSON report'); "
  fi
  [[ ${rep[status]:-} == "done" ]] || bad[$k]+="restore $tag: status '${rep[status]:-}' (want done); "
  [[ ${rep[failed]:-} == 0 ]] || bad[$k]+="restore $tag: failed ${rep[failed]:-?}; "
  [[ ${rep[selected]:-} == "$n" ]] || bad[$k]+="restore $tag: selected ${rep[selected]:-?} (want $n); "
}
if has mailvault; then
  printf '* %s %s\n' "$MV_DOVECOT_MASTER_USER" "$MV_DOVECOT_MASTER_PASS" >"$authf"
  chmod 600 "$authf"
  log "mailvault: init + import of $n messages (custodian $custodian)"
  t0=$EPOCHREALTIME
  "$mv_bin" --vault "$vault" --key-file "$key" init >"$work/init.log" 2>&1 ||
    { tail -n 20 "$work/init.log" >&2; die "mailvault init failed"; }
  "$mv_bin" --vault "$vault" --key-file "$key" import --custodian "$custodian" "$maildir" >"$work/import.log" 2>&1 ||
    { tail -n 20 "$work/import.log" >&2; die "mailvault import failed"; }
  import_sec=$(since "$t0")
  "$mv_bin" --vault "$vault" --key-file "$key" stats --json >"$work/stats.json" 2>"$work/stats.err" ||
    die "mailvault stats --json failed: $(cat "$work/stats.err")"
  stored=$(json_get "$work/stats.json" messages)
  [[ $stored == "$n" ]] || die "the vault holds ${stored:-?} messages after the import, expected $n (see $work/import.log)"
  log "  init + import: ${import_sec}s; the vault holds $stored messages"

  log "mailvault restore into empty mailboxes: $runs run(s)"
  for ((r = 1; r <= runs; r++)); do
    u=mve$r@example.test
    restore_run mv_empty "$u" "$r" "empty-$r"
    record_run mv_empty "$r_sec"
    [[ ${rep[appended]:-} == "$n" ]] || bad[mv_empty]+="restore empty-$r: appended ${rep[appended]:-?} (want $n); "
    vcheck mv_empty "$u" "check mve$r" "$n" full X-Mailvault-Restore
  done

  log "mailvault restore into half-full mailboxes: $runs run(s), each run twice"
  rerun_added=0
  for ((r = 1; r <= runs; r++)); do
    u=mvh$r@example.test
    restore_run mv_half "$u" "$r" "half-$r"
    record_run mv_half "$r_sec"
    [[ ${rep[appended]:-} == $((n - n_half)) ]] || bad[mv_half]+="restore half-$r: appended ${rep[appended]:-?} (want $((n - n_half))); "
    [[ ${rep[present]:-} == "$n_half" ]] || bad[mv_half]+="restore half-$r: present ${rep[present]:-?} (want $n_half); "
    vcheck mv_half "$u" "check mvh$r" "$n" half X-Mailvault-Restore
    c1=$(dovecot_count "$dv" "$u")
    # the same job again: must append nothing
    restore_run mv_rerun "$u" "$r" "half-$r-again"
    rerun_secs+="$r_sec "
    c2=$(dovecot_count "$dv" "$u")
    if [[ ${rep[appended]:-} =~ ^[0-9]+$ ]]; then
      rerun_appended=$((${rerun_appended:-0} + rep[appended]))
    else
      bad[mv_rerun]+="second run into $u: no appended count in its report; "
    fi
    rerun_added=$((rerun_added + c2 - c1))
    ((c2 == c1)) || bad[mv_rerun]+="second run into $u: count $c1 -> $c2; "
    vcheck mv_rerun "$u" "check mvh$r after the second run" "$n" half X-Mailvault-Restore
  done
fi

# ---- report -----------------------------------------------------------------------------------
grep -E 'Error|Fatal|Panic|Warning' "$(dovecot_log "$dv")" | grep -v 'Killed with signal 15' |
  sed 's/^/dovecot: /' >>"$odd_log" || true
best() { maxof "${rates[$1]:-}"; }
med() { median "${rates[$1]:-}"; }
ratio() { if [[ -n $1 && -n $2 ]]; then calc '%.2f' "$1 / $2"; fi; }
commas() { local x; x=$(echo "$1" | xargs); echo "${x// /, }"; }
report=$work/report.md
{
  echo
  echo "## Restore benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- host: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?'), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr); client and server share the machine"
  echo "- versions: $(if has mailvault; then echo "mailvault $("$mv_bin" --version 2>/dev/null | head -n 1)"; else echo 'mailvault not run'; fi); $(mbsync --version 2>/dev/null | head -n 1 || echo 'mbsync ?'); Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1)"
  echo "- input: $n messages ($raw_bytes bytes) from $corpus/cur; half-full mailboxes hold every second one ($n_half), delivered over LMTP before the timed runs ($fill_rate deliveries/s)"
  echo "- server: private Dovecot on 127.0.0.1 (tests/recovery/servers.sh), maildir, mail_fsync = optimized; IMAP without TLS; $runs run(s) per case, each into a fresh user"
  if has mailvault; then
    echo "- restore: \`$(sed "s|$work|\$W|g; s|$mv_bin|mailvault|" "$work/restore-empty-1.cmd")\`; vault made by init + import in ${import_sec}s"
  fi
  if has mbsync; then echo "- mbsync: \`mbsync -c RC -q push\`, RC as in tests/recovery/bench_mbsync.sh (Sync Push, Create Far, SyncState *), a fresh Maildir copy per run"; fi
  echo "- msgs/s = $n / wall seconds of the whole command; for the half-full cases that is the whole set, half of which was already there"
  echo
  echo "| case | runs: msgs/s | best | median |"
  echo "|---|---|---:|---:|"
  for k in mb_empty mb_half mv_empty mv_half; do
    [[ -n ${rates[$k]:-} ]] || continue
    case $k in
      mb_empty) label='mbsync push, empty mailbox' ;;
      mb_half) label='mbsync push, half-full mailbox (no dedup)' ;;
      mv_empty) label='mailvault restore, empty mailbox' ;;
      mv_half) label='mailvault restore, half-full mailbox (whole set)' ;;
    esac
    printf '| %s | %s | %s | %s |\n' "$label" "$(commas "${rates[$k]}")" "$(best "$k")" "$(med "$k")"
  done
  if [[ -n $rerun_secs ]]; then
    printf '| %s | %s | | |\n' 'mailvault restore, same job again (seconds)' "$(commas "$rerun_secs")"
  fi
  echo
  echo "### Targets (issue 7)"
  echo
  printf "| %-${label_width}s | %12s | %-14s | %-4s |\n" measure value target ''
  printf '|%s|--------------:|----------------|------|\n' "$(printf '%*s' $((label_width + 2)) '' | tr ' ' -)"
  info "mbsync, empty mailbox: msgs/s (best)" "$(best mb_empty)"
  info "mailvault, empty mailbox: msgs/s (best)" "$(best mv_empty)"
  goal "empty: mailvault / mbsync (best / best)" "$(ratio "$(best mv_empty)" "$(best mb_empty)")" '>=' 3
  info "empty: mailvault / mbsync (median / median)" "$(ratio "$(med mv_empty)" "$(med mb_empty)")"
  info "mbsync, half-full mailbox: msgs/s of the whole set (best)" "$(best mb_half)"
  info "mailvault, half-full, dedup on: msgs/s of the whole set (best)" "$(best mv_half)"
  goal "half-full: mailvault / mbsync into an empty mailbox" "$(ratio "$(best mv_half)" "$(best mb_empty)")" '>=' 2
  goal "half-full: mailvault / mbsync into a half-full mailbox" "$(ratio "$(best mv_half)" "$(best mb_half)")" '>=' 2
  info "half-full: mailvault / mbsync empty (median / median)" "$(ratio "$(med mv_half)" "$(med mb_empty)")"
  if has mailvault; then
    target "mailvault, empty: duplicates (all runs, server-side)" "${tot_dup[mv_empty]:-}" '<=' 0
    target "mailvault, empty: missing" "${tot_miss[mv_empty]:-}" '<=' 0
    target "mailvault, empty: unexpected messages in the mailbox" "${tot_unexp[mv_empty]:-}" '<=' 0
    target "mailvault, half-full: duplicates (delivered copies count)" "${tot_dup[mv_half]:-}" '<=' 0
    target "mailvault, half-full: missing" "${tot_miss[mv_half]:-}" '<=' 0
    target "mailvault, half-full: unexpected messages in the mailbox" "${tot_unexp[mv_half]:-}" '<=' 0
    info "copies that match only by decoded parts (bytes differ)" "$((${tot_parts[mv_empty]:-0} + ${tot_parts[mv_half]:-0}))"
    target "second run: appended (--json, all runs)" "$rerun_appended" '<=' 0
    target "second run: messages added (doveadm count)" "$rerun_added" '<=' 0
    target "second run: duplicates (server-side)" "${tot_dup[mv_rerun]:-}" '<=' 0
    for k in mv_empty mv_half mv_rerun; do
      target "$k: report / count problems (listed below)" "$(if [[ -n ${bad[$k]:-} ]]; then echo 1; else echo 0; fi)" '<=' 0
    done
  fi
  if has mbsync; then
    info "mbsync, empty: duplicates (all runs)" "${tot_dup[mb_empty]:-}"
    info "mbsync, empty: missing / unexpected (bytes mbsync changed)" "${tot_miss[mb_empty]:-} / ${tot_unexp[mb_empty]:-}"
    info "mbsync, half-full: duplicates (it does not deduplicate)" "${tot_dup[mb_half]:-} of $((runs * n_half))"
    info "mbsync, half-full: missing / unexpected" "${tot_miss[mb_half]:-} / ${tot_unexp[mb_half]:-}"
  fi
  echo
  echo "Speed rows say PASS or MISS (a MISS does not fail the run); correctness rows PASS or FAIL."
  echo "The issue's half-full target (\"≥ 2× mbsync's rate for the whole set\") is taken against mbsync"
  echo "pushing the same set into an empty mailbox: mbsync cannot do the half-full job (it appends the"
  echo "pre-filled half a second time), so its half-full rate is shown for reference only. mbsync's"
  echo "missing / unexpected are messages whose bytes it changed on the way (on the SpamAssassin corpus: 8"
  echo "messages with bare CRs); they are not mailvault's checks and do not fail the run."
  for k in mv_empty mv_half mv_rerun mb_empty mb_half; do
    [[ -z ${bad[$k]:-} ]] || printf '\nProblems (%s): %s\n' "$k" "${bad[$k]}"
  done
  n_odd=$(wc -l <"$odd_log")
  if ((n_odd)); then
    echo
    echo "Unexpected lines in the logs ($n_odd; first 20):"
    echo
    head -n 20 "$odd_log" | sed 's/^/    /'
  fi
} >"$report"
cat "$report"
kv() { printf ' %s=%s' "$1" "${2:-n/a}"; }
{
  printf 'restore_bench-summary:'
  kv n "$n"; kv runs "$runs"
  kv mbsync_empty_mps "$(best mb_empty)"; kv mbsync_half_mps "$(best mb_half)"
  kv mv_empty_mps "$(best mv_empty)"; kv mv_half_mps "$(best mv_half)"
  kv ratio_empty "$(ratio "$(best mv_empty)" "$(best mb_empty)")"
  kv ratio_half "$(ratio "$(best mv_half)" "$(best mb_empty)")"
  kv duplicates "$(( ${tot_dup[mv_empty]:-0} + ${tot_dup[mv_half]:-0} ))"
  kv missing "$(( ${tot_miss[mv_empty]:-0} + ${tot_miss[mv_half]:-0} ))"
  kv rerun_appended "$rerun_appended"; kv failed "$failed"
  echo
}
((failed)) && exit 1
exit 0
