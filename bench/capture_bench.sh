#!/usr/bin/env bash
# Journal capture benchmark: `mailvault serve` against Postfix's smtp-sink (the
# protocol's ceiling: it accepts and throws away) and a private Dovecot LMTP (a real durable
# delivery), all driven by Postfix's smtp-source with the same flags; then mailvault's index lag
# while it sustains a fixed capture rate, and its memory with many concurrent connections.
#
# usage: bench/capture_bench.sh [--messages N] [--runs N] [--sessions N] [--size BYTES]
#                               [--rate N] [--duration SECS] [--connections N]
#                               [--parts LIST] [--keep]
#
#   --messages N      messages per throughput run, the same N for every server (default 20000)
#   --runs N          throughput runs per server, best (highest rate) kept; every run gets a
#                     fresh vault / Dovecot mail directory / smtp-sink (default 3)
#   --sessions N      parallel SMTP/LMTP sessions for smtp-source and the rate client (default 20)
#   --size BYTES      message payload bytes (smtp-source -l; default 5120)
#   --rate N          capture rate to hold for the index lag part, messages/s (default 500)
#   --duration SECS   how long to hold it (default 30)
#   --connections N   concurrent connections for the memory part (default 1000)
#   --parts LIST      comma-separated subset of throughput,lag,rss,kill (default: all four);
#                     kill: tests/capture/kill_loop.sh, 50 kill -9 cycles under load, counting
#                     what the clients were told (MAILVAULT_KILL_CYCLES overrides the 50)
#   --keep            keep the temporary directory (vaults, mail, server logs)
#
# Environment:
#   MAILVAULT_BIN     mailvault binary (default: <repo>/build/release/cli/mailvault)
#   TMPDIR            where the vaults and Dovecot's mail go (keep it short: Dovecot's unix
#                     sockets live below it and a socket path must stay under 108 bytes)
#
# Needs root (Dovecot's master and smtp-sink -u start as root and drop privileges), python3,
# and the Debian packages postfix (smtp-source, smtp-sink; no Postfix instance is started),
# dovecot-core and dovecot-lmtpd. It installs nothing; it creates the user mvtest for Dovecot's
# mail if missing (tests/capture/servers.sh). It raises its own open-files limit to 4096
# when it is lower.
#
# 1. Throughput. For each run, in this order, each server fresh and on its own free port:
#      smtp-sink -u postfix 127.0.0.1:PORT 256             (no -d: nothing is written)
#      Dovecot LMTP (tests/capture/servers.sh dovecot_lmtp_start: maildir, mail_fsync =
#                    optimized, i.e. each delivery fsynced before the 250)
#      mailvault --vault V --key-file K serve --smtp 127.0.0.1:PORT      (indexer running)
#      mailvault --vault V --key-file K serve --lmtp 127.0.0.1:PORT      (indexer running)
#      mailvault --vault V --key-file K serve --smtp 127.0.0.1:PORT --no-index  (info only)
#    each driven by (LMTP servers with -L added)
#      smtp-source -d -s SESSIONS -l SIZE -m N -f sender@example.test -t archive@journal.test 127.0.0.1:PORT
#    messages/s = N / wall seconds of smtp-source (connect to last reply). smtp-source stops at
#    the first reply that is not 2xx/3xx, so a finished run means N accepted messages; the
#    script also checks that Dovecot's maildir holds N files and mailvault's `stats --json`
#    N messages after each run. The targets use the best run of each server; the ratios of
#    the medians are printed as info (the runs are short, so a busy machine shows).
# 2. Index lag. A fresh vault, `serve --smtp` with the indexer, and a paced python client:
#    SESSIONS SMTP sessions kept open, message i sent at t0 + i/RATE for DURATION seconds
#    (text bodies of SIZE bytes from a 30,000-word vocabulary, so the indexer has real terms
#    to post). `mailvault status --json` is sampled every 0.5 s during the load and until
#    the index has caught up. Lag of a sample = max(index.oldest_unindexed.age_seconds,
#    index.lag / achieved rate); reported: the maximum over the samples, and how long the
#    index took to catch up once the load stopped. serve publishes its status once a second
#    and age_seconds is whole seconds, so the figure is good to about 1 s.
# 3. Memory. `mailvault --config F serve` with max-connections and max-connections-per-ip
#    raised to CONNECTIONS + 500, the indexer running. A python client opens CONNECTIONS
#    connections, and on each: EHLO, MAIL, RCPT, DATA and half of a SIZE-byte message; with
#    all of them held open it reads VmRSS/VmHWM from /proc/PID/status (and status --json
#    sessions); then it finishes every transaction (expects 250 on each) and reads VmHWM
#    again: the peak over the whole run, idle start and the commits included.
#
# Output: Markdown tables and the target lines, each PASS, FAIL or SKIP, then one summary line
# starting with "capture_bench-summary:" (key=value pairs; n/a when not measured). Exit
# status: 0 no target failed, 1 some target failed, 2 setup or tool error.
set -euo pipefail


script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
bench_name=capture_bench
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"
export LC_ALL=C  # '.' as the decimal point in $EPOCHREALTIME and awk

messages=20000 runs=3 sessions=20 size=5120 rate=500 duration=30 connections=1000
parts='throughput,lag,rss,kill' keep=0 kill_cycles=50
while (($#)); do
  case $1 in
    --messages|--runs|--sessions|--size|--rate|--duration|--connections|--parts)
      (($# >= 2)) || die "$1 needs a value"
      v=${1#--}; printf -v "$v" '%s' "$2"; shift 2 ;;
    --messages=*|--runs=*|--sessions=*|--size=*|--rate=*|--duration=*|--connections=*|--parts=*)
      v=${1%%=*}; v=${v#--}; printf -v "$v" '%s' "${1#*=}"; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done
for v in messages runs sessions size rate duration connections; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--$v must be a positive integer, got '${!v}'"
done
((messages >= sessions)) || die "--messages must be at least --sessions ($sessions)"

declare -A want=()
IFS=',' read -r -a part_list <<<"$parts"
for p in "${part_list[@]}"; do
  case $p in
    throughput|lag|rss|kill) want[$p]=1 ;;
    '') ;;
    *) die "unknown part '$p' in --parts (choose from throughput,lag,rss,kill)" ;;
  esac
done
((${#want[@]})) || die "--parts selects nothing"
has() { [[ -n ${want[$1]:-} ]]; }

# ---- prerequisites (checked before anything runs) --------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
command -v python3 >/dev/null || die "python3 not found (the rate and connection clients are python)"
mv_bin=${MAILVAULT_BIN:-$repo_root/build/release/cli/mailvault}
[[ -f $mv_bin && -x $mv_bin ]] ||
  die "mailvault binary not found or not executable: $mv_bin
  build it first (release build into build/release/), or point MAILVAULT_BIN at it"
mv_bin=$(cd "$(dirname "$mv_bin")" && pwd -P)/$(basename "$mv_bin")
if has throughput; then
  ((EUID == 0)) || die "the throughput part needs root (Dovecot's master and smtp-sink -u start as root); run the rest with --parts lag,rss"
  if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null; then
    die "smtp-source / smtp-sink not found: install the Debian package postfix (no Postfix instance is started)"
  fi
  id -u postfix >/dev/null 2>&1 || die "user postfix missing (smtp-sink -u postfix): install the Debian package postfix"
  command -v dovecot >/dev/null || die "dovecot not found: install the Debian packages dovecot-core and dovecot-lmtpd"
  [[ -x /usr/lib/dovecot/lmtp ]] || die "/usr/lib/dovecot/lmtp not found: install the Debian package dovecot-lmtpd"
fi
nofile=$(ulimit -n)
if [[ $nofile != unlimited ]] && ((nofile < 4096)); then
  ulimit -n 4096 2>/dev/null ||
    die "cannot raise the open-files limit to 4096 (ulimit -n; hard limit $(ulimit -Hn)); the memory part opens $connections connections"
  nofile=4096
fi
if has rss && [[ $nofile != unlimited ]] && ((connections + 100 > nofile)); then
  die "--connections $connections needs more open files than the limit of $nofile (ulimit -n)"
fi
# shellcheck source=tests/capture/servers.sh
source "$repo_root/tests/capture/servers.sh"

# ---- scratch space, report helpers (bench/lib.sh), server bookkeeping -----------------------
label_width=48
bench_scratch mailvault-capture-bench
chmod 755 "$work"   # smtp-sink and Dovecot's mail user reach below it

mv_pid='' sink_pid='' dovecot_dir=''
# shellcheck disable=SC2317  # called by the EXIT trap
stop_all() {
  if [[ -n $mv_pid ]]; then mv_stop; fi
  if [[ -n $sink_pid ]]; then sink_stop; fi
  if [[ -n $dovecot_dir ]]; then dovecot_stop "$dovecot_dir" || true; dovecot_dir=''; fi
  return 0
}
trap 'stop_all; bench_cleanup' EXIT

key=$work/key
odd_log=$work/odd-log-lines
: >"$odd_log"

# serve's normal lines; anything else in its log is reported
mv_normal='mailvault serve: (listening on |received SIGTERM|capture stopped|indexer stopped at|stopped cleanly)'
mv_log_check() { # mv_log_check LOG: copies unexpected lines of serve's log to $odd_log
  grep -Ev "$mv_normal" "$1" | sed "s|^|$(basename "$1"): |" >>"$odd_log" || true
}

# mv_start LOG PORT... -- SERVE_ARGS...: starts the binary itself in the background (mv_pid is
# the server's pid) and waits until every PORT listens.
mv_start() {
  local logf=$1 p ports=()
  shift
  while [[ $1 != -- ]]; do ports+=("$1"); shift; done
  shift
  "$mv_bin" "$@" >>"$logf" 2>&1 &
  mv_pid=$!
  for p in "${ports[@]}"; do
    if ! wait_port "$p" 15 || ! kill -0 "$mv_pid" 2>/dev/null; then
      tail -n 20 "$logf" >&2
      die "mailvault serve did not come up on 127.0.0.1:$p (log $logf)"
    fi
  done
}
# mv_stop: SIGTERM (serve drains and exits), wait up to 120 s, then SIGKILL
mv_stop() {
  local pid=$mv_pid rc=0 i
  mv_pid=''
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 1200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "warning: mailvault serve $pid did not exit 120 s after SIGTERM; killing it"
    echo "serve $pid: did not exit 120 s after SIGTERM (killed)" >>"$odd_log"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  if ((rc)); then
    log "warning: mailvault serve $pid exited with status $rc"
    echo "serve $pid: exit status $rc" >>"$odd_log"
  fi
  return 0
}
sink_stop() {
  local pid=$sink_pid
  sink_pid=''
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
mvc() { "$mv_bin" --vault "$1" --key-file "$key" "${@:2}"; }
mv_init() { # mv_init VAULT: a fresh vault (key file made by the first init, reused after)
  rm -rf "$1"
  mvc "$1" init >"$work/init.log" 2>&1 || { tail -n 20 "$work/init.log" >&2; die "mailvault init $1 failed"; }
}

# ---- 1. throughput --------------------------------------------------------------------------
src_flags=(-d -s "$sessions" -l "$size" -m "$messages" -f sender@example.test -t archive@journal.test)
servers=(sink dovecot mv_smtp mv_lmtp mv_noidx)
declare -A name=([sink]='smtp-sink (discards)' [dovecot]='Dovecot LMTP (maildir)'
                 [mv_smtp]='mailvault serve, SMTP' [mv_lmtp]='mailvault serve, LMTP'
                 [mv_noidx]='mailvault --no-index, SMTP')
declare -A proto=([sink]=SMTP [dovecot]=LMTP [mv_smtp]=SMTP [mv_lmtp]=LMTP [mv_noidx]=SMTP)
declare -A best=() bsec=() runs_s=() stored=()

# drive SERVER PORT RUN: runs smtp-source against PORT; sets d_sec and d_rate
drive() {
  local s=$1 port=$2 r=$3 lf="$work/smtp-source-$1-$3.log" t0 t1 rc=0 extra=()
  [[ ${proto[$s]} == LMTP ]] && extra=(-L)
  t0=$EPOCHREALTIME
  smtp-source "${extra[@]}" "${src_flags[@]}" "127.0.0.1:$port" >"$lf" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  if ((rc)); then
    tail -n 20 "$lf" >&2
    die "smtp-source against ${name[$s]} (run $r) failed with status $rc (log $lf)"
  fi
  if [[ -s $lf ]]; then
    log "warning: smtp-source printed output against ${name[$s]} (run $r):"
    sed 's/^/  | /' "$lf" | head -n 10 >&2
    sed "s|^|smtp-source ${name[$s]} run $r: |" "$lf" >>"$odd_log"
  fi
  d_sec=$(calc '%.3f' "$t1 - $t0")
  d_rate=$(calc '%.1f' "$messages / $d_sec")
  runs_s[$s]+="$d_rate "
  if [[ -z ${best[$s]:-} ]] || awk -v a="$d_rate" -v b="${best[$s]}" 'BEGIN { exit !(a > b) }'; then
    best[$s]=$d_rate bsec[$s]=$d_sec
  fi
  log "  ${name[$s]}: $messages messages in ${d_sec}s = $d_rate msgs/s"
}

if has throughput; then
  log "throughput: $runs run(s) x ${#servers[@]} servers, smtp-source ${src_flags[*]}"
  for ((r = 1; r <= runs; r++)); do
    log "run $r/$runs"
    # smtp-sink: no -d, so nothing is written (the helper in servers.sh always dumps to files)
    port=$(free_port)
    smtp-sink -u postfix "127.0.0.1:$port" 256 >>"$work/smtp-sink.log" 2>&1 &
    sink_pid=$!
    wait_port "$port" 15 || { tail "$work/smtp-sink.log" >&2; die "smtp-sink did not come up"; }
    drive sink "$port" "$r"
    sink_stop
    stored[sink]='(discarded)'

    dovecot_dir=$work/dovecot-$r
    port=$(free_port)
    dovecot_lmtp_start "$dovecot_dir" "$port" || die "could not start Dovecot (see above)"
    drive dovecot "$port" "$r"
    dovecot_stop "$dovecot_dir" || log "warning: dovecot_stop $dovecot_dir failed"
    n=$(find "$dovecot_dir/mail" -type f -path '*/new/*' -o -type f -path '*/cur/*' | wc -l)
    stored[dovecot]=$n
    ((n == messages)) || log "warning: Dovecot's maildir holds $n messages after run $r, expected $messages"
    grep -E 'Error|Fatal|Panic|Warning' "$(dovecot_log "$dovecot_dir")" |
      grep -v 'Killed with signal 15' | sed "s|^|dovecot run $r: |" >>"$odd_log" || true
    ((keep)) || rm -rf "$dovecot_dir/mail"
    dovecot_dir=''

    for s in mv_smtp mv_lmtp mv_noidx; do
      vault=$work/vault-$s-$r
      mv_init "$vault"
      port=$(free_port)
      args=(--smtp "127.0.0.1:$port")
      [[ $s == mv_lmtp ]] && args=(--lmtp "127.0.0.1:$port")
      [[ $s == mv_noidx ]] && args+=(--no-index)
      mv_start "$work/serve-$s-$r.log" "$port" -- --vault "$vault" --key-file "$key" serve "${args[@]}"
      drive "$s" "$port" "$r"
      mv_stop
      mv_log_check "$work/serve-$s-$r.log"
      n=''
      if mvc "$vault" stats --json >"$work/stats.json" 2>"$work/stats.err"; then
        n=$(json_get "$work/stats.json" messages 2>/dev/null) || n=''
      fi
      stored[$s]=${n:-?}
      [[ $n == "$messages" ]] || log "warning: the vault holds ${n:-?} messages after run $r, expected $messages"
      ((keep)) || rm -rf "$vault"
    done
  done
fi

# ---- 2. index lag at a fixed rate -----------------------------------------------------------
rate_client() { # rate_client PORT VAULT SAMPLES SUMMARY
  P_PORT=$1 P_VAULT=$2 P_SAMPLES=$3 P_SUMMARY=$4 P_RATE=$rate P_DURATION=$duration \
  P_SESSIONS=$sessions P_SIZE=$size P_MV_BIN=$mv_bin python3 - <<'EOF'
import email.utils, itertools, json, os, random, smtplib, subprocess, sys, threading, time

env = os.environ
port, rate, dur = int(env["P_PORT"]), float(env["P_RATE"]), float(env["P_DURATION"])
nsess, size = int(env["P_SESSIONS"]), int(env["P_SIZE"])
total = int(rate * dur)
DRAIN_MAX = 120.0

rnd = random.Random(4)
syl = "ka lo mi ne ru sa ti vo ze ba de fu gi ho ju pe qu ra so tu wa xi yo an el or".split()
vocab = ["".join(rnd.choice(syl) for _ in range(rnd.randint(2, 4))) for _ in range(30000)]
cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(vocab))))  # Zipf-like

# ~2 MB of text lines made up front; a message body is SIZE bytes of consecutive lines from a
# random starting line (cheap per message, so the client keeps its pace on a small machine)
def make_lines():
    r, out, n = random.Random(5), [], 0
    while n < max(2_000_000, 4 * size):
        w = r.choices(vocab, cum_weights=cum, k=12)
        line = " ".join(w)[:76]
        out.append(line); n += len(line) + 2
    return out
lines = make_lines()

def body(r):
    i = r.randrange(len(lines))
    out, n = [], 0
    while n < size:
        out.append(lines[i % len(lines)]); n += len(out[-1]) + 2; i += 1
    return "\r\n".join(out)[:size]

lock = threading.Lock()
done, errors, late, took = [], [], [], []
t0 = time.monotonic() + 1.0          # sessions connect first
stamp = int(time.time())

def session(k):
    r = random.Random(k)
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        s.ehlo("capture-bench.test")
    except Exception as e:  # noqa: BLE001 - counted and reported
        with lock:
            errors.append(f"session {k}: connect: {e!r}")
        s = None
    for i in range(k, total, nsess):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        start = time.monotonic()
        msg = (f"From: Capture Bench <sender@example.test>\r\nTo: archive@journal.test\r\n"
               f"Subject: capture bench message {i} {r.choice(vocab)} {r.choice(vocab)}\r\n"
               f"Date: {email.utils.formatdate(localtime=True)}\r\n"
               f"Message-ID: <{stamp}.{i}@capture-bench.test>\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body(r)}\r\n").encode()
        try:
            if s is None:
                s = smtplib.SMTP("127.0.0.1", port, timeout=60)
                s.ehlo("capture-bench.test")
            s.sendmail("sender@example.test", ["archive@journal.test"], msg)
            end = time.monotonic()
            with lock:
                done.append(end); late.append(start - due); took.append(end - start)
        except Exception as e:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(f"message {i}: {e!r}")
            try:
                s.close()
            except Exception:
                pass
            s = None
    if s is not None:
        try:
            s.quit()
        except Exception:
            pass

samples = []   # (t - t0, messages, lag, age, rate, sessions)
sending = True
def status():
    c = subprocess.run([env["P_MV_BIN"], "--vault", env["P_VAULT"], "status", "--json"],
                       capture_output=True, stdin=subprocess.DEVNULL)
    try:
        return json.loads(c.stdout)
    except ValueError:
        return None

threads = [threading.Thread(target=session, args=(k,)) for k in range(nsess)]
for t in threads: t.start()
t_end = None
tick = t0 - 0.5
drained_at = None
while True:
    now = time.monotonic()
    if tick > now:
        time.sleep(tick - now)
    tick += 0.5
    j = status()
    ts = time.monotonic() - t0
    if j and j.get("running"):
        ix = j.get("index", {})
        samples.append((ts, j.get("messages", 0), ix.get("lag", 0),
                        ix.get("oldest_unindexed", {}).get("age_seconds", 0),
                        j.get("messages_per_second", 0.0), j.get("sessions", 0), j.get("updated", 0)))
    if t_end is None and not any(t.is_alive() for t in threads):
        t_end = time.monotonic()
        end_wall = time.time()
    if t_end is not None:
        if (j and j.get("updated", 0) > end_wall + 0.5 and j.get("messages", -1) >= len(done)
                and j.get("index", {}).get("lag", 1) == 0):
            drained_at = time.monotonic()
            break
        if time.monotonic() - t_end > DRAIN_MAX:
            break
for t in threads: t.join()

ok = len(done)
span = (max(done) - t0) if done else 0.0
achieved = ok / span if span > 0 else 0.0
conv = achieved if achieved > 0 else rate
max_age = max((s[3] for s in samples), default=0)
max_lag = max((s[2] for s in samples), default=0)
max_lag_s = max((max(s[3], s[2] / conv) for s in samples), default=0.0)
late.sort()
p99_late = late[int(0.99 * (len(late) - 1))] if late else 0.0
took.sort()
p99_took = took[int(0.99 * (len(took) - 1))] if took else 0.0
with open(env["P_SAMPLES"], "w") as f:
    f.write("t_s\tmessages\tlag\tage_s\tserve_rate\tsessions\n")
    for s in samples:
        f.write("%.2f\t%d\t%d\t%d\t%.1f\t%d\n" % s[:6])
with open(env["P_SUMMARY"], "w") as f:
    f.write(f"planned={total}\nsent={ok}\nerrors={len(errors)}\nspan={span:.2f}\n"
            f"achieved={achieved:.1f}\nmax_age={max_age}\nmax_lag={max_lag}\n"
            f"max_lag_s={max_lag_s:.2f}\np99_late_ms={p99_late * 1000:.1f}\n"
            f"p99_took_ms={p99_took * 1000:.1f}\n"
            f"drain={'%.1f' % (drained_at - t_end) if drained_at else ''}\n"
            f"samples={len(samples)}\n")
for e in errors[:10]:
    print(f"capture_bench: rate client error: {e}", file=sys.stderr)
EOF
}

declare -A lagr=()
if has lag; then
  vault=$work/vault-lag
  mv_init "$vault"
  port=$(free_port)
  log "index lag: $rate msgs/s for ${duration}s over $sessions sessions, sampling status --json every 0.5 s"
  mv_start "$work/serve-lag.log" "$port" -- --vault "$vault" --key-file "$key" serve --smtp "127.0.0.1:$port"
  rate_client "$port" "$vault" "$work/lag-samples.tsv" "$work/lag-summary" ||
    die "the rate client failed"
  mv_stop
  mv_log_check "$work/serve-lag.log"
  while IFS='=' read -r k v; do lagr[$k]=$v; done <"$work/lag-summary"
  log "  sent ${lagr[sent]}/${lagr[planned]} at ${lagr[achieved]} msgs/s; max lag ${lagr[max_lag_s]} s (age ${lagr[max_age]} s, ${lagr[max_lag]} changes); caught up ${lagr[drain]:-?} s after the load"
  ((lagr[errors] == 0)) || echo "rate client: ${lagr[errors]} failed messages" >>"$odd_log"
  ((keep)) || rm -rf "$vault"
fi

# ---- 3. memory with many concurrent connections ---------------------------------------------
hold_client() { # hold_client PORT PID VAULT SUMMARY
  H_PORT=$1 H_PID=$2 H_VAULT=$3 H_SUMMARY=$4 H_N=$connections H_SIZE=$size H_MV_BIN=$mv_bin \
  python3 - <<'EOF'
import json, os, socket, subprocess, sys, time

env = os.environ
port, pid, n, size = int(env["H_PORT"]), int(env["H_PID"]), int(env["H_N"]), int(env["H_SIZE"])

def proc_status():
    v = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                v[k] = int(rest.split()[0])
    v["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return v

def status():
    c = subprocess.run([env["H_MV_BIN"], "--vault", env["H_VAULT"], "status", "--json"],
                       capture_output=True, stdin=subprocess.DEVNULL)
    try:
        return json.loads(c.stdout)
    except ValueError:
        return {}

def reply(s):
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            raise EOFError("connection closed by the server")
        buf += d
        if buf.endswith(b"\r\n"):
            last = buf[:-2].split(b"\r\n")[-1]
            if len(last) >= 4 and last[3:4] == b" ":
                return buf

def cmd(s, line, want):
    s.sendall(line)
    r = reply(s)
    if not r.startswith(want):
        raise RuntimeError(f"{line.strip()!r} -> {r.strip()!r}")

line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
body = (line * (size // len(line) + 1))[:size]
half = len(body) // 2
base = proc_status()
socks, errors = [], []
t0 = time.monotonic()
for i in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        r = reply(s)
        if not r.startswith(b"220"):
            raise RuntimeError(f"banner {r.strip()!r}")
        cmd(s, b"EHLO capture-bench.test\r\n", b"250")
        cmd(s, b"MAIL FROM:<sender@example.test>\r\n", b"250")
        cmd(s, b"RCPT TO:<archive@journal.test>\r\n", b"250")
        cmd(s, b"DATA\r\n", b"354")
        s.sendall(f"From: <sender@example.test>\r\nTo: <archive@journal.test>\r\n"
                  f"Subject: held connection {i}\r\nMessage-ID: <held.{i}.{int(time.time())}@capture-bench.test>\r\n\r\n".encode()
                  + body[:half])
        socks.append(s)
    except Exception as e:  # noqa: BLE001 - reported
        errors.append(f"connection {i}: {e!r}")
        if len(errors) >= 20:
            break
open_s = time.monotonic() - t0
time.sleep(2.0)   # let the server read what was sent
held = proc_status()
sessions = 0
for _ in range(30):  # serve.json is rewritten once a second
    sessions = status().get("sessions", 0)
    if sessions >= len(socks):
        break
    time.sleep(0.2)
held2 = proc_status()
ok = 0
for s in socks:
    try:
        s.sendall(body[half:] + b"\r\n.\r\n")
    except Exception as e:  # noqa: BLE001
        errors.append(f"finishing: {e!r}")
for s in socks:
    try:
        r = reply(s)
        if r.startswith(b"250"):
            ok += 1
        else:
            errors.append(f"end of data -> {r.strip()!r}")
        s.sendall(b"QUIT\r\n")
    except Exception as e:  # noqa: BLE001
        errors.append(f"end of data: {e!r}")
for s in socks:
    try:
        reply(s)
    except Exception:
        pass
    s.close()
time.sleep(1.5)
after = proc_status()
with open(env["H_SUMMARY"], "w") as f:
    f.write(f"base_rss={base['VmRSS']}\nheld_rss={max(held['VmRSS'], held2['VmRSS'])}\n"
            f"held_hwm={held2['VmHWM']}\nhwm={after['VmHWM']}\nafter_rss={after['VmRSS']}\n"
            f"threads={held2['Threads']}\nfds={held['fds']}\nopened={len(socks)}\n"
            f"sessions={sessions}\ncompleted={ok}\nerrors={len(errors)}\nopen_s={open_s:.2f}\n")
for e in errors[:10]:
    print(f"capture_bench: connection client error: {e}", file=sys.stderr)
EOF
}

declare -A rssr=()
if has rss; then
  vault=$work/vault-rss
  mv_init "$vault"
  port=$(free_port)
  cfg=$work/rss.conf
  cat >"$cfg" <<EOF
vault = $vault
key-file = $key
[capture]
smtp-listen = 127.0.0.1:$port
max-connections = $((connections + 500))
max-connections-per-ip = $((connections + 500))
EOF
  log "memory: $connections concurrent connections, each in the middle of DATA"
  mv_start "$work/serve-rss.log" "$port" -- --config "$cfg" serve
  hold_client "$port" "$mv_pid" "$vault" "$work/rss-summary" || die "the connection client failed"
  mv_stop
  mv_log_check "$work/serve-rss.log"
  while IFS='=' read -r k v; do rssr[$k]=$v; done <"$work/rss-summary"
  log "  held ${rssr[opened]} connections (status: ${rssr[sessions]} sessions): RSS $(mib "${rssr[held_rss]}") MiB; peak $(mib "${rssr[hwm]}") MiB; ${rssr[completed]} transactions completed"
  ((rssr[errors] == 0)) || echo "connection client: ${rssr[errors]} errors" >>"$odd_log"
  ((keep)) || rm -rf "$vault"
fi

# ---- kill -9 cycles -------------------------------------------------------------------------
declare -A killr=()
if has kill; then
  kill_cycles=${MAILVAULT_KILL_CYCLES:-$kill_cycles}
  log "kill -9 loop: $kill_cycles cycles"
  if "$repo_root/tests/capture/kill_loop.sh" "$mv_bin" "$kill_cycles" >"$work/kill-loop.log" 2>&1; then
    killr[ok]=1
  else
    killr[ok]=0
  fi
  # "acknowledged N, missing M, verify clean"
  read -r killr[acked] killr[missing] < <(sed -n 's/.*acknowledged \([0-9]*\), missing \([0-9]*\).*/\1 \2/p' "$work/kill-loop.log" | tail -n 1)
  ((killr[ok])) || { echo "kill loop failed; last lines:" >>"$odd_log"; tail -n 5 "$work/kill-loop.log" >>"$odd_log"; }
fi

# ---- report ---------------------------------------------------------------------------------
echo
echo "## Capture benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- host: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?'), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr); clients and servers share the machine"
echo "- filesystem of $work: $(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }')"
versions="mailvault $("$mv_bin" --version 2>/dev/null | head -n 1 || true)"
if has throughput; then
  versions+="; Postfix $(postconf -d -h mail_version 2>/dev/null || echo '?') (smtp-source, smtp-sink)"
  versions+="; Dovecot $(dovecot --version 2>/dev/null | head -n 1 || echo '?')"
fi
echo "- versions: $versions"
if has throughput; then
  echo
  echo "### Throughput: smtp-source ${src_flags[*]}, best of $runs"
  echo
  printf '| %-26s | proto | %-24s | median msgs/s | best msgs/s | best s  | stored      |\n' server 'msgs/s per run'
  echo "|----------------------------|-------|--------------------------|--------------:|------------:|--------:|------------:|"
  for s in "${servers[@]}"; do
    printf '| %-26s | %-5s | %-24s | %13s | %11s | %7s | %11s |\n' "${name[$s]}" "${proto[$s]}" \
      "${runs_s[$s]% }" "$(median "${runs_s[$s]}")" "${best[$s]}" "${bsec[$s]}" "${stored[$s]:-}"
  done
  echo
  echo "msgs/s = $messages / wall seconds of smtp-source (LMTP servers: with -L). stored = what the"
  echo "last run left (Dovecot: files in the maildir; mailvault: stats --json messages). mailvault"
  echo "runs with its indexer on, as deployed (--no-index: capture alone, for comparison);"
  echo "smtp-sink writes nothing (no -d). Ratios below use the best runs; median ratios are info."
fi
if has lag; then
  echo
  echo "### Index lag at $rate msgs/s for ${duration}s ($sessions sessions, python client)"
  echo
  printf '| %-46s | %11s |\n' measure value
  echo "|------------------------------------------------|------------:|"
  printf '| %-46s | %11s |\n' "messages sent / planned" "${lagr[sent]}/${lagr[planned]}" \
    "achieved capture rate (msgs/s)" "${lagr[achieved]}" \
    "client lateness p99 (ms)" "${lagr[p99_late_ms]}" \
    "transaction time p99 (ms)" "${lagr[p99_took_ms]}" \
    "max oldest_unindexed.age_seconds" "${lagr[max_age]}" \
    "max index.lag (changes)" "${lagr[max_lag]}" \
    "max lag (s) = max(age, lag / rate)" "${lagr[max_lag_s]}" \
    "index caught up after the load (s)" "${lagr[drain]:-n/a}" \
    "status samples" "${lagr[samples]}"
  echo
  echo "Samples (every 0.5 s): $work/lag-samples.tsv$( ((keep)) || echo ' (use --keep to keep it)')."
fi
if has rss; then
  echo
  echo "### Memory with $connections concurrent connections (each mid-DATA)"
  echo
  printf '| %-46s | %11s |\n' measure value
  echo "|------------------------------------------------|------------:|"
  printf '| %-46s | %11s |\n' "connections opened / sessions in status" "${rssr[opened]}/${rssr[sessions]}" \
    "open files of serve while held" "${rssr[fds]}" \
    "threads of serve" "${rssr[threads]}" \
    "RSS idle before (MiB)" "$(mib "${rssr[base_rss]}")" \
    "RSS with all held (MiB)" "$(mib "${rssr[held_rss]}")" \
    "peak RSS (VmHWM) after all completed (MiB)" "$(mib "${rssr[hwm]}")" \
    "transactions completed with 250" "${rssr[completed]}" \
    "seconds to open them all" "${rssr[open_s]}"
fi
if has kill; then
  echo
  echo "### kill -9 under load ($kill_cycles cycles, tests/capture/kill_loop.sh)"
  echo
  echo "$(tail -n 1 "$work/kill-loop.log")"
fi
echo
echo "### Targets"
echo
echo "| measure                                          |        value | target         |      |"
echo "|--------------------------------------------------|-------------:|----------------|------|"
r_dv='' r_sink='' r_dv_l='' r_sink_l='' r_dv_m='' r_sink_m='' r_dv_n='' r_sink_n=''
if has throughput; then
  r_dv=$(calc '%.2f' "${best[mv_smtp]} / ${best[dovecot]}")
  r_sink=$(calc '%.3f' "${best[mv_smtp]} / ${best[sink]}")
  r_dv_l=$(calc '%.2f' "${best[mv_lmtp]} / ${best[dovecot]}")
  r_sink_l=$(calc '%.3f' "${best[mv_lmtp]} / ${best[sink]}")
  r_dv_m=$(calc '%.2f' "$(median "${runs_s[mv_smtp]}") / $(median "${runs_s[dovecot]}")")
  r_sink_m=$(calc '%.3f' "$(median "${runs_s[mv_smtp]}") / $(median "${runs_s[sink]}")")
  r_dv_n=$(calc '%.2f' "${best[mv_noidx]} / ${best[dovecot]}")
  r_sink_n=$(calc '%.3f' "${best[mv_noidx]} / ${best[sink]}")
fi
target "msgs/s: mailvault SMTP / Dovecot LMTP" "$r_dv" '>=' 4
target "msgs/s: mailvault SMTP / smtp-sink" "$r_sink" '>=' 0.4
info   "same, medians: mailvault SMTP / Dovecot LMTP" "$r_dv_m"
info   "same, medians: mailvault SMTP / smtp-sink" "$r_sink_m"
info   "msgs/s: mailvault LMTP / Dovecot LMTP" "$r_dv_l"
info   "msgs/s: mailvault LMTP / smtp-sink" "$r_sink_l"
info   "msgs/s: mailvault --no-index / Dovecot LMTP" "$r_dv_n"
info   "msgs/s: mailvault --no-index / smtp-sink" "$r_sink_n"
rate_floor=$(calc '%.0f' "0.95 * $rate")
target "lag run: achieved capture rate (msgs/s)" "${lagr[achieved]:-}" '>=' "$rate_floor"
target "lag run: messages failed" "${lagr[errors]:-}" '<=' 0
target "max index lag at $rate msgs/s (s)" "${lagr[max_lag_s]:-}" '<=' 5
target "connections held at once" "${rssr[opened]:-}" '>=' "$connections"
target "transactions completed on them" "${rssr[completed]:-}" '>=' "$connections"
kill_missing=''
if has kill; then kill_missing=${killr[missing]:-}; ((killr[ok])) || kill_missing=${kill_missing:-1}; fi
target "acknowledged messages lost over $kill_cycles kill -9 cycles" "$kill_missing" '<=' 0
hwm_mib='' held_mib=''
if has rss; then hwm_mib=$(mib "${rssr[hwm]}") held_mib=$(mib "${rssr[held_rss]}"); fi
target "peak RSS, $connections connections (MiB)" "$hwm_mib" '<=' 500
echo
n_odd=$(wc -l <"$odd_log")
if ((n_odd)); then
  echo "Unexpected lines in server logs / client output ($n_odd; first 20):"
  echo
  head -n 20 "$odd_log" | sed 's/^/    /'
  echo
fi
kv() { printf ' %s=%s' "$1" "${2:-n/a}"; }
{
  printf 'capture_bench-summary:'
  kv messages "$(has throughput && echo "$messages")"; kv runs "$(has throughput && echo "$runs")"
  kv sink_mps "${best[sink]:-}"; kv dovecot_lmtp_mps "${best[dovecot]:-}"
  kv mailvault_smtp_mps "${best[mv_smtp]:-}"; kv mailvault_lmtp_mps "${best[mv_lmtp]:-}"
  kv mailvault_noindex_mps "${best[mv_noidx]:-}"
  kv ratio_dovecot "$r_dv"; kv ratio_sink "$r_sink"
  kv lag_rate_target "$(has lag && echo "$rate")"; kv lag_rate_achieved "${lagr[achieved]:-}"
  kv lag_max_s "${lagr[max_lag_s]:-}"; kv lag_drain_s "${lagr[drain]:-}"
  kv connections "${rssr[opened]:-}"; kv rss_held_mib "$held_mib"; kv rss_peak_mib "$hwm_mib"
  kv kill_cycles "$(has kill && echo "$kill_cycles")"; kv kill_acknowledged "${killr[acked]:-}"; kv kill_missing "$kill_missing"
  kv odd_log_lines "$n_odd"; kv failed "$failed"
  echo
}
((failed)) && exit 1
exit 0
