#!/usr/bin/env bash
# REST API benchmark: `mailvault serve --http` under wrk (tests/api/wrk_mix.lua: searches,
# message metadata, raw messages, with a reviewer's bearer token) while Postfix's smtp-source
# feeds ~200 msgs/s into the same serve's SMTP port; then the API's search latency against
# `mailvault search` in its own process (docs/design/api.md §7, "Load").
#
# usage: bench/api_bench.sh [RESULTS_FILE] [--duration SECS] [--threads N] [--connections N]
#                           [--rate N] [--search-duration SECS] [--reps N] [--keep]
#
#   RESULTS_FILE        the Markdown report is printed and appended here (default /tmp/api_bench.md)
#   --duration SECS     the mixed wrk run (default 60)
#   --threads N         wrk threads (default 4)
#   --connections N     wrk connections, mixed and search-only runs (default 50)
#   --rate N            smtp-source messages/s during the mixed run (default 200)
#   --search-duration S the search-only wrk run (default 20)
#   --reps N            `mailvault search` runs per query, best kept (default 5)
#   --wrk-timeout T     wrk's --timeout (default 2s, wrk's own default: a slower reply counts as
#                       a socket error)
#   --keep              keep the temporary directory (vault, logs, wrk output)
#   --transport T       the API transport, beast (default) or cpprest
#
# Environment:
#   MAILVAULT_BIN     mailvault binary (default: <repo>/build/release/cli/mailvault; mailvault-admin
#                     beside it)
#   MAILVAULT_CORPUS  Maildir to import (default ~/.cache/mailvault/corpus/maildir, made by
#                     scripts/fetch-corpus.sh)
#   TMPDIR            where the vault goes
#
# Meant to run as root on the test machine. Needs wrk, curl, python3 and the Debian package
# postfix (smtp-source only; no Postfix instance is started). It installs nothing.
#
# What it does:
#  1. A fresh vault: init, import the corpus, `index run`; a reviewer:
#       echo PW | mailvault --vault V --key-file K user add rev --role reviewer
#  2. mailvault --vault V --key-file K serve --http 127.0.0.1:P --smtp 127.0.0.1:S
#     Log in: curl POST /api/v1/auth/login {"name":"rev","password":PW} -> a session token (mvs_).
#     Message ids for the GETs: POST /api/v1/search {"query":"*","limit":1000}.
#     Precheck (not timed): every query of wrk_mix.lua answers 200; 20 ids answer 200 on
#     /messages/{id} and /raw, and the SHA-256 of each raw body is its id (the contract).
#  3. Load. 10 smtp-source processes, started 0.1 s apart, each with RATE/10 sessions that send
#     one message and then wait 1 s (-d -w 1), messages of the corpus's mean size (-l) and
#     unique Message-IDs; while they run:
#       MV_TOKEN=.. MV_IDS_FILE=.. wrk -t4 -c50 -d60s --latency -s tests/api/wrk_mix.lua URL
#     Right after wrk: GET /healthz on a fresh connection (curl -m 1) must answer 200 within
#     1 s (no stalled listener). Capture rate = serve's status "messages" over wrk's run.
#     Then the smtp-source processes are stopped (SIGTERM); one that stopped by itself before
#     that got a reply other than 2xx/3xx (smtp-source exits at the first) and is counted.
#  4. Once the index has caught up: the search-only runs, MV_MIX=search,
#       wrk -t4 -c50 -d20s --latency   (the target)   and   wrk -t1 -c1 -d10s (info: no queueing)
#     and each query's total from the API.
#  5. serve stopped (SIGTERM); `mailvault audit verify` must exit 0; the vault must hold every
#     message smtp-source sent a final "." for, less at most one per session (smtp-source
#     counts a message when it sends the "."; those in flight at the SIGTERM may be lost
#     unacknowledged).
#  6. In-process search: for each query, `mailvault --vault V search --json --limit 50
#     --sort date -- Q` (what the API runs: limit 50, newest first), one warm-up then --reps
#     timed runs, best kept; its total must equal the API's. Process start-up is measured as
#     `mailvault --vault V search --help` (best of --reps) and shown subtracted as info.
#     in-process p95 = the nearest-rank 95th percentile of the per-query best times (the API
#     p95 is over requests that rotate evenly through the same queries).
#
# Targets (PASS/FAIL/SKIP rows; lib.sh's target): mixed run socket errors 0, non-2xx 0, requests
# > 0; /healthz after the run within 1 s; capture rate >= 90% of --rate; smtp-source refused 0;
# acknowledged messages missing 0; precheck failures 0; search-only socket errors 0, non-2xx 0;
# API totals equal to `mailvault search`'s; audit verify clean; and
#     search p95, API at -c50 / in-process at 50 threads (mailvault-admin api bench-search)  <= 2
# The last one includes wrk's queueing: 50 connections on fewer API workers wait for each
# other (Little's law: mean latency >= 50 / requests per second, printed as info). The -c1
# ratio shows the API's own overhead alone. The audit fsync's share of the p95 is not
# measured here (serve does not export it yet).
#
# Output: Markdown on stdout (appended to RESULTS_FILE), progress on stderr, then one line
# starting with "api_bench-summary:". Exit status: 0 no target failed, 1 a target failed,
# 2 setup or tool error.
set -euo pipefail


script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
bench_name=api_bench
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"
export LC_ALL=C  # '.' as the decimal point in $EPOCHREALTIME and awk

results=/tmp/api_bench.md
duration=60 threads=4 connections=50 rate=200 search_duration=20 reps=5 keep=0 wrk_timeout=2s transport=beast
smtp_procs=10 c1_duration=10 search_limit=50
positional=()
while (($#)); do
  case $1 in
    --duration|--threads|--connections|--rate|--search-duration|--reps|--wrk-timeout)
      (($# >= 2)) || die "$1 needs a value"
      v=${1#--}; v=${v//-/_}; printf -v "$v" '%s' "$2"; shift 2 ;;
    --duration=*|--threads=*|--connections=*|--rate=*|--search-duration=*|--reps=*|--wrk-timeout=*)
      v=${1%%=*}; v=${v#--}; v=${v//-/_}; printf -v "$v" '%s' "${1#*=}"; shift ;;
    --keep) keep=1; shift ;;
    --transport) transport=$2; shift 2 ;;
    --transport=*) transport=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) die "unknown option: $1 (try --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
((${#positional[@]} <= 1)) || die "one results file at most, got: ${positional[*]}"
((${#positional[@]} == 0)) || results=${positional[0]}
for v in duration threads connections rate search_duration reps; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer, got '${!v}'"
done
[[ $wrk_timeout =~ ^[0-9]+(ms|s|m)?$ ]] || die "--wrk-timeout: a wrk duration such as 2s, got '$wrk_timeout'"
((connections >= threads)) || die "--connections must be at least --threads (wrk needs a connection per thread)"
((rate >= smtp_procs)) || smtp_procs=$rate

# ---- prerequisites (checked before anything runs) --------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
for t in python3 curl wrk; do command -v "$t" >/dev/null || die "$t not found (Debian package $t)"; done
command -v smtp-source >/dev/null || die "smtp-source not found: install the Debian package postfix (no Postfix instance is started)"
mv_bin=${MAILVAULT_BIN:-$repo_root/build/release/cli/mailvault}
[[ -f $mv_bin && -x $mv_bin ]] ||
  die "mailvault binary not found or not executable: $mv_bin
  build it first (release build into build/release/), or point MAILVAULT_BIN at it"
mv_bin=$(cd "$(dirname "$mv_bin")" && pwd -P)/$(basename "$mv_bin")
[[ -x $(dirname "$mv_bin")/mailvault-admin ]] || die "mailvault-admin not found beside $mv_bin"
corpus=${MAILVAULT_CORPUS:-$HOME/.cache/mailvault/corpus/maildir}
[[ -d $corpus ]] || die "corpus not found: $corpus (run scripts/fetch-corpus.sh, or set MAILVAULT_CORPUS to a Maildir)"
lua=$repo_root/tests/api/wrk_mix.lua
[[ -f $lua ]] || die "wrk script not found: $lua"
nofile=$(ulimit -n)
if [[ $nofile != unlimited ]] && ((nofile < 4096)); then
  ulimit -n 4096 2>/dev/null || die "cannot raise the open-files limit to 4096 (ulimit -n; hard limit $(ulimit -Hn))"
fi
results_dir=$(dirname "$results")
[[ -d $results_dir && -w $results_dir ]] || die "cannot write the results file $results (directory missing or read-only)"

# shellcheck source=tests/capture/servers.sh
source "$repo_root/tests/capture/servers.sh"   # free_port, wait_port

# ---- scratch space, report helpers (bench/lib.sh), server bookkeeping -----------------------
label_width=58
bench_scratch mailvault-api-bench

vault=$work/vault key=$work/key serve_log=$work/serve.log odd_log=$work/odd-log-lines
: >"$odd_log"
mv_pid='' src_pids=()
# shellcheck disable=SC2317  # called by the EXIT trap
stop_all() {
  local p
  for p in "${src_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  if [[ -n $mv_pid ]]; then mv_stop; fi
  return 0
}
trap 'stop_all; bench_cleanup' EXIT

mvc() { "$mv_bin" --vault "$vault" --key-file "$key" "$@"; }
# mv_stop: SIGTERM (serve drains and exits), wait up to 120 s, then SIGKILL; sets serve_rc
serve_rc=''
mv_stop() {
  local pid=$mv_pid i
  mv_pid=''
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 1200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "warning: mailvault serve $pid did not exit 120 s after SIGTERM; killing it"
    echo "serve $pid: did not exit 120 s after SIGTERM (killed)" >>"$odd_log"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  serve_rc=0
  wait "$pid" 2>/dev/null || serve_rc=$?
  ((serve_rc == 0)) || echo "serve $pid: exit status $serve_rc" >>"$odd_log"
  return 0
}
# jget FILE KEY.KEY...: a value from a JSON file (numbers and strings as text; missing: empty)
jget() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    v = json.load(open(sys.argv[1]))
    for k in sys.argv[2].split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
except (OSError, ValueError, KeyError, IndexError, TypeError):
    sys.exit(0)
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (int, float, str)):
    print(v)
else:
    print(json.dumps(v))
EOF
}
# status_get KEY.KEY...: from `mailvault status --json` of the running serve (empty if not running)
status_get() {
  mvc status --json >"$work/status.json" 2>/dev/null || { : >"$work/status.json"; }
  jget "$work/status.json" "$1"
}
api() { # api METHOD PATH [BODY]: curl with the token; body in $work/api.out, prints the status code
  local args=(-sS -m 30 -o "$work/api.out" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $token")
  if (($# >= 3)); then args+=(-H 'Content-Type: application/json' --data-binary "$3"); fi
  curl "${args[@]}" "$base_url$2" 2>>"$work/curl.err" || true   # -w prints 000 when nothing came back
}

# ---- 1. vault, corpus, reviewer --------------------------------------------------------------
n_input=$(find "$corpus" -type f | wc -l)
((n_input > 0)) || die "no message files in $corpus"
mean_size=$(find "$corpus" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s / NR }')
log "corpus: $corpus ($n_input files, mean size $mean_size bytes)"
log "importing into a fresh vault ($work/vault)"
mvc init >"$work/init.log" 2>&1 || { tail -n 20 "$work/init.log" >&2; die "mailvault init failed"; }
mvc import -q "$corpus" >"$work/import.log" 2>&1 || { tail -n 20 "$work/import.log" >&2; die "mailvault import failed"; }
mvc index run -q >"$work/index.log" 2>&1 || { tail -n 20 "$work/index.log" >&2; die "mailvault index run failed"; }
mvc stats --json >"$work/stats-before.json" 2>"$work/stats.err" || die "mailvault stats --json failed: $(cat "$work/stats.err")"
base_messages=$(json_get "$work/stats-before.json" messages)
if ! [[ $base_messages =~ ^[0-9]+$ ]] || ((base_messages == 0)); then
  die "stats --json: no message count after the import ($(head -c 200 "$work/stats-before.json"))"
fi
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
echo "$password" | mvc user add rev --role reviewer >"$work/user.log" 2>&1 ||
  { tail -n 20 "$work/user.log" >&2; die "mailvault user add rev --role reviewer failed"; }

# ---- 2. serve, login, ids, queries, precheck -------------------------------------------------
http_port=$(free_port) || die "no free port"
smtp_port=$(free_port) || die "no free port"
base_url=http://127.0.0.1:$http_port
log "serve: --http 127.0.0.1:$http_port --smtp 127.0.0.1:$smtp_port"
[[ $transport == beast || $transport == cpprest ]] || die "--transport is beast or cpprest"
printf '[api]\ntransport = %s\n' "$transport" >"$work/serve.conf"
"$mv_bin" --vault "$vault" --key-file "$key" --config "$work/serve.conf" serve --http "127.0.0.1:$http_port" \
  --smtp "127.0.0.1:$smtp_port" >>"$serve_log" 2>&1 &
mv_pid=$!
for p in "$http_port" "$smtp_port"; do
  if ! wait_port "$p" 30 || ! kill -0 "$mv_pid" 2>/dev/null; then
    tail -n 20 "$serve_log" >&2
    die "mailvault serve did not come up on 127.0.0.1:$p (log $serve_log)"
  fi
done
for ((i = 0; i < 100; i++)); do [[ $(status_get running) == true ]] && break; sleep 0.1; done
[[ $(status_get running) == true ]] || die "mailvault status --json does not see the running serve"

python3 -c 'import json,sys; print(json.dumps({"name": "rev", "password": sys.argv[1]}))' "$password" >"$work/login-body.json"
code=$(curl -sS -m 30 -o "$work/login.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary @"$work/login-body.json" "$base_url/api/v1/auth/login" 2>>"$work/curl.err") || code=000
[[ $code == 200 ]] || die "POST /api/v1/auth/login answered $code: $(head -c 300 "$work/login.json" 2>/dev/null)"
token=$(jget "$work/login.json" token)
[[ $token == mvs_* ]] || die "login answered no session token (mvs_...): $(head -c 300 "$work/login.json")"

code=$(api POST /api/v1/search '{"query":"*","limit":1000,"sort":"newest"}')
[[ $code == 200 ]] || die "POST /api/v1/search {\"query\":\"*\"} answered $code: $(head -c 300 "$work/api.out")"
python3 -c 'import json,sys; [print(h["id"]) for h in json.load(open(sys.argv[1]))["hits"]]' "$work/api.out" >"$work/ids.txt" ||
  die "cannot read ids from the search answer: $(head -c 300 "$work/api.out")"
n_ids=$(wc -l <"$work/ids.txt")
((n_ids > 0)) || die "the reviewer's search for * found no message"

# the queries: the [[...]] lines between the markers of wrk_mix.lua (any other line there is an error)
python3 - "$lua" "$work/queries.txt" <<'EOF' || die "cannot read the query list from $lua"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^-- queries:begin\n(.*?)^-- queries:end$", text, re.S | re.M)
if not m:
    sys.exit("no -- queries:begin / -- queries:end block")
qs = []
for ln in m.group(1).splitlines():
    s = ln.strip()
    if not s or s.startswith("--") or s in ("local QUERIES = {", "}"):
        continue
    q = re.fullmatch(r"\[\[(.*)\]\],?", s)
    if not q:
        sys.exit("unexpected line in the query block: %r" % ln)
    qs.append(q.group(1))
if not qs:
    sys.exit("the query block is empty")
open(sys.argv[2], "w").write("".join(q + "\n" for q in qs))
EOF
n_queries=$(wc -l <"$work/queries.txt")

# precheck: every query 200 (else wrk's non-2xx count would only say "something"); 20 ids
# served with the right bytes
precheck() { # precheck SUMMARY TOTALS_TSV
  P_URL=$base_url P_TOKEN=$token P_QUERIES=$work/queries.txt P_IDS=$work/ids.txt P_LIMIT=$search_limit \
  P_SUMMARY=$1 P_TOTALS=$2 python3 - <<'EOF'
import hashlib, json, os, sys, urllib.error, urllib.request
env = os.environ
def call(method, path, body=None):
    req = urllib.request.Request(env["P_URL"] + path, method=method, data=body,
                                 headers={"Authorization": "Bearer " + env["P_TOKEN"], "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
fails = []
with open(env["P_TOTALS"], "w") as out:
    for q in open(env["P_QUERIES"]).read().splitlines():
        st, body = call("POST", "/api/v1/search",
                        json.dumps({"query": q, "limit": int(env["P_LIMIT"]), "sort": "newest"}).encode())
        total = ""
        if st == 200:
            total = json.loads(body).get("total", "")
        else:
            fails.append("search %r: %d %r" % (q, st, body[:200]))
        out.write("%s\t%s\t%s\n" % (q, st, total))
ids = open(env["P_IDS"]).read().split()[:20]
for i in ids:
    st, body = call("GET", "/api/v1/messages/" + i)
    if st != 200 or json.loads(body).get("id") != i:
        fails.append("GET /messages/%s: %d %r" % (i[:12], st, body[:120]))
    st, body = call("GET", "/api/v1/messages/%s/raw" % i)
    if st != 200 or hashlib.sha256(body).hexdigest() != i:
        fails.append("GET /messages/%s/raw: %d, %d bytes, sha256 %s" % (i[:12], st, len(body), hashlib.sha256(body).hexdigest()[:12]))
for f in fails[:10]:
    print("api_bench: precheck: " + f, file=sys.stderr)
open(env["P_SUMMARY"], "w").write("failures=%d\nids_checked=%d\n" % (len(fails), len(ids)))
EOF
}
log "precheck: $n_queries queries, $((n_ids < 20 ? n_ids : 20)) of $n_ids ids (meta, raw, SHA-256)"
precheck "$work/precheck-1" "$work/totals-1.tsv" || die "the precheck client failed"
pre_fail=$(sed -n 's/^failures=//p' "$work/precheck-1")

# ---- 3. load: smtp-source + wrk mix -----------------------------------------------------------
per_proc=$(((rate + smtp_procs - 1) / smtp_procs))
src_sessions=$((per_proc * smtp_procs))
src_msgs=$((per_proc * (duration + 60)))   # more than the run needs; stopped after wrk
log "load: $smtp_procs x smtp-source -s $per_proc -w 1 -l $mean_size (about $src_sessions msgs/s) + wrk -t$threads -c$connections -d${duration}s"
for ((k = 0; k < smtp_procs; k++)); do
  smtp-source -c -d -s "$per_proc" -w 1 -l "$mean_size" -m "$src_msgs" -f bench@example.test \
    -t archive@journal.test -S 'api bench' "127.0.0.1:$smtp_port" >"$work/smtp-source-$k.out" 2>"$work/smtp-source-$k.err" &
  src_pids+=($!)
  sleep "$(calc '%.3f' "1 / $smtp_procs")"
done
sleep 2   # sessions connected and sending
m_start=$(status_get messages) t_start=$EPOCHREALTIME
wrk_rc=0
MV_TOKEN=$token MV_IDS_FILE=$work/ids.txt MV_MIX=mix MV_LIMIT=$search_limit MV_SORT=newest \
  wrk -t"$threads" -c"$connections" -d"${duration}s" --latency --timeout "$wrk_timeout" -s "$lua" "$base_url" \
  >"$work/wrk-mix.txt" 2>&1 || wrk_rc=$?
# straight after the run, before anything is stopped: a fresh connection must be answered within 1 s
hz=$(curl -sS -m 1 -o "$work/healthz.json" -w '%{http_code} %{time_total}' "$base_url/healthz" 2>>"$work/curl.err") || true
m_end=$(status_get messages) t_end=$EPOCHREALTIME
read -r hz_code hz_time <<<"${hz:-000 9.999}"
hz_value=$hz_time
if [[ $hz_code != 200 || $(jget "$work/healthz.json" status) != ok ]]; then
  log "GET /healthz after the run: status ${hz_code:-none} after ${hz_time:-?}s: $(head -c 200 "$work/healthz.json" 2>/dev/null)"
  hz_value=99   # fails the <= 1 s target whatever the time was
fi
# stop the feeders: one that is no longer running stopped by itself, i.e. at a refusal (or a crash)
src_refused=0 src_sent=0
for k in "${!src_pids[@]}"; do
  p=${src_pids[$k]} rc=0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  else
    wait "$p" 2>/dev/null || rc=$?
    if ((rc)); then
      src_refused=$((src_refused + 1))
      sed "s|^|smtp-source $k (exit $rc): |" "$work/smtp-source-$k.err" | head -n 5 >>"$odd_log"
    fi
  fi
  n=$(tr '\r' '\n' <"$work/smtp-source-$k.out" | grep -E '^[0-9]+$' | tail -n 1 || true)
  src_sent=$((src_sent + ${n:-0}))
done
src_pids=()
((wrk_rc == 0)) || { tail -n 20 "$work/wrk-mix.txt" >&2; die "wrk (mixed run) failed with status $wrk_rc"; }
grep '^{"script":"wrk_mix"' "$work/wrk-mix.txt" | tail -n 1 >"$work/wrk-mix.json"
[[ -s $work/wrk-mix.json ]] || { tail -n 20 "$work/wrk-mix.txt" >&2; die "no result line from wrk_mix.lua's done()"; }
cap_rate=''
if [[ $m_start =~ ^[0-9]+$ && $m_end =~ ^[0-9]+$ ]]; then
  cap_rate=$(calc '%.1f' "($m_end - $m_start) / ($t_end - $t_start)")
fi
log "  mixed run: $(jget "$work/wrk-mix.json" requests) requests, non-2xx $(jget "$work/wrk-mix.json" non2xx), socket errors $(jget "$work/wrk-mix.json" socket_errors); capture ${cap_rate:-?} msgs/s; healthz after: $hz_code in ${hz_time}s"

# ---- 4. search only, once the index has caught up ----------------------------------------------
log "waiting for the index to catch up"
lag=''
for ((i = 0; i < 1200; i++)); do
  lag=$(status_get index.lag)
  [[ $lag == 0 ]] && break
  sleep 0.1
done
[[ $lag == 0 ]] || log "warning: the index still lags by ${lag:-?} changes after 120 s; measuring anyway"
precheck "$work/precheck-2" "$work/totals.tsv" || die "the precheck client failed"
pre_fail=$((pre_fail + $(sed -n 's/^failures=//p' "$work/precheck-2")))
run_search_wrk() { # run_search_wrk NAME THREADS CONNECTIONS SECONDS
  local rc=0
  log "search only: wrk -t$2 -c$3 -d${4}s"
  MV_TOKEN=$token MV_MIX=search MV_LIMIT=$search_limit MV_SORT=newest \
    wrk -t"$2" -c"$3" -d"${4}s" --latency --timeout "$wrk_timeout" -s "$lua" "$base_url" >"$work/wrk-$1.txt" 2>&1 || rc=$?
  ((rc == 0)) || { tail -n 20 "$work/wrk-$1.txt" >&2; die "wrk ($1) failed with status $rc"; }
  grep '^{"script":"wrk_mix"' "$work/wrk-$1.txt" | tail -n 1 >"$work/wrk-$1.json"
  [[ -s $work/wrk-$1.json ]] || die "no result line from wrk_mix.lua's done() ($1)"
}
run_search_wrk search "$threads" "$connections" "$search_duration"
run_search_wrk search-c1 1 1 "$c1_duration"

# ---- 5. stop serve; audit chain; every acknowledged message stored ----------------------------
log "stopping serve"
mv_stop
audit_rc=0
mvc audit verify >"$work/audit-verify.log" 2>&1 || audit_rc=$?
((audit_rc == 0)) || sed 's/^/audit verify: /' "$work/audit-verify.log" | head -n 5 >>"$odd_log"
mvc stats --json >"$work/stats-after.json" 2>"$work/stats.err" || die "mailvault stats --json failed: $(cat "$work/stats.err")"
after_messages=$(json_get "$work/stats-after.json" messages)
stored_new=$((after_messages - base_messages))
# smtp-source counts a message when it sends the final "."; up to one per session was still
# waiting for its 250 at the SIGTERM and may be lost without ever having been acknowledged
missing=$((src_sent - src_sessions - stored_new))
((missing > 0)) || missing=0
grep -Eai 'error|fatal|panic|assert|sanitizer|terminate|exception' "$serve_log" | head -n 20 | sed 's/^/serve.log: /' >>"$odd_log" || true

# ---- 6. in-process search: mailvault search, best of N per query ------------------------------
log "in-process search: $n_queries queries x (1 + $reps) runs of mailvault search"
P_MV_BIN=$mv_bin P_VAULT=$vault P_QUERIES=$work/queries.txt P_TOTALS=$work/totals.tsv P_REPS=$reps \
P_LIMIT=$search_limit P_TABLE=$work/inproc-table.md P_SUMMARY=$work/inproc-summary python3 - <<'EOF' || die "the search timing client failed"
import json, math, os, subprocess, sys, time
env = os.environ
mv, vault, reps = env["P_MV_BIN"], env["P_VAULT"], int(env["P_REPS"])
api_total = {}
for ln in open(env["P_TOTALS"]).read().splitlines():
    q, st, total = ln.rsplit("\t", 2)
    api_total[q] = total

def best_of(cmd):
    best, out, rc = None, b"", 0
    for i in range(reps + 1):          # the first run warms the page cache and is not counted
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        out, rc = p.stdout, p.returncode
        if rc:
            print("api_bench: %s exited %d: %s" % (" ".join(cmd[-3:]), rc, p.stderr.decode(errors="replace")[:200]),
                  file=sys.stderr)
            return None, out, rc
        if i and (best is None or dt < best):
            best = dt
    return best, out, rc

def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100.0 * len(xs)) - 1)] if xs else float("nan")

startup, _, rc = best_of([mv, "--vault", vault, "search", "--help"])
if startup is None:
    sys.exit("mailvault search --help failed")
rows, times, corr, mismatch, failed = [], [], [], 0, 0
for q in open(env["P_QUERIES"]).read().splitlines():
    t, out, rc = best_of([mv, "--vault", vault, "search", "--json", "--limit", env["P_LIMIT"], "--sort", "date", "--", q])
    if t is None:
        failed += 1
        rows.append("| `%s` | %s | (exit %d) | | |" % (q, api_total.get(q, ""), rc))
        continue
    total = json.loads(out).get("total")
    same = str(total) == str(api_total.get(q))
    mismatch += 0 if same else 1
    times.append(t)
    corr.append(max(t - startup, 0.0))
    rows.append("| `%s` | %s | %s%s | %.2f | %.2f |" % (q.replace("|", "\\|"), api_total.get(q, "?"), total,
                                                     "" if same else " **differs**", t * 1000, max(t - startup, 0) * 1000))
with open(env["P_TABLE"], "w") as f:
    f.write("| query | API total | `mailvault search` total | best ms | minus start-up ms |\n")
    f.write("|---|---:|---:|---:|---:|\n")
    f.write("\n".join(rows) + "\n")
with open(env["P_SUMMARY"], "w") as f:
    f.write("startup_ms=%.3f\np50_ms=%.3f\np95_ms=%.3f\np95_corr_ms=%.3f\nmismatches=%d\nfailed=%d\n" % (
        startup * 1000, pct(times, 50) * 1000, pct(times, 95) * 1000, pct(corr, 95) * 1000, mismatch, failed))
EOF
declare -A ip=()
while IFS='=' read -r k v; do ip[$k]=$v; done <"$work/inproc-summary"

# ---- 7. in-process search at the same concurrency: mailvault-admin api bench-search ------------
# The same queries, searched by N threads straight on the index for the same time as the
# search-only wrk runs (one Searcher per thread, reopened before each search, page of 50):
# what the index answers at that concurrency without HTTP, JSON, authentication and the audit
# entry. The target compares the API's p95 with this one's, at -c$connections and -c1.
admin_bin=$(dirname "$mv_bin")/mailvault-admin
log "in-process search at $connections and 1 threads: mailvault-admin api bench-search"
"$admin_bin" --vault "$vault" api bench-search --queries "$work/queries.txt" --threads "$connections" \
  --seconds "$search_duration" --limit "$search_limit" >"$work/inproc-c$connections.json" 2>"$work/inproc.err" ||
  die "api bench-search failed: $(cat "$work/inproc.err")"
"$admin_bin" --vault "$vault" api bench-search --queries "$work/queries.txt" --threads 1 \
  --seconds "$c1_duration" --limit "$search_limit" >"$work/inproc-c1.json" 2>"$work/inproc.err" ||
  die "api bench-search failed: $(cat "$work/inproc.err")"
inproc_p95=$(jget "$work/inproc-c$connections.json" p95_ms) inproc_c1_p95=$(jget "$work/inproc-c1.json" p95_ms)
inproc_rps=$(jget "$work/inproc-c$connections.json" per_second)

# ---- report ---------------------------------------------------------------------------------
w() { jget "$work/wrk-$1.json" "$2"; }
report=$work/report.md
{
  echo
  echo "## API benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- host: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?'), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr); wrk, smtp-source and serve share the machine"
  echo "- versions: mailvault $("$mv_bin" --version 2>/dev/null | head -n 1 || true); $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2); Postfix $(postconf -d -h mail_version 2>/dev/null || echo '?') (smtp-source)"
  echo "- vault: $base_messages messages imported from $corpus ($n_input files, mean $mean_size bytes), then $stored_new captured during the run"
  echo "- serve: \`mailvault serve --http 127.0.0.1:P --smtp 127.0.0.1:S\` ([api] transport = $transport, other settings default, indexer on); a reviewer's session token"
  echo
  echo "### Mixed load: wrk -t$threads -c$connections -d${duration}s --latency --timeout $wrk_timeout -s tests/api/wrk_mix.lua"
  echo
  echo "Searches, metadata and raw messages 3:2:1 ($n_queries queries, $n_ids ids), while $smtp_procs smtp-source processes"
  echo "feed about $src_sessions msgs/s of ${mean_size}-byte mail into the SMTP port."
  echo
  printf '| %-44s | %18s |\n' measure value
  echo "|----------------------------------------------|-------------------:|"
  printf '| %-44s | %18s |\n' \
    "requests (requests/s)" "$(w mix requests) ($(calc '%.0f' "$(w mix requests_per_s)"))" \
    "sent: search / meta / raw" "$(w mix requests_sent_by_kind.search) / $(w mix requests_sent_by_kind.meta) / $(w mix requests_sent_by_kind.raw)" \
    "non-2xx responses" "$(w mix non2xx)" \
    "socket errors (connect/read/write/timeout)" "$(w mix socket_errors) ($(w mix errors.connect)/$(w mix errors.read)/$(w mix errors.write)/$(w mix errors.timeout))" \
    "latency p50 / p95 / p99 (ms)" "$(w mix latency_ms.p50) / $(w mix latency_ms.p95) / $(w mix latency_ms.p99)" \
    "latency max (ms)" "$(w mix latency_ms.max)" \
    "capture rate during the run (msgs/s)" "${cap_rate:-n/a}" \
    "smtp-source messages sent (final \".\")" "$src_sent" \
    "GET /healthz right after (fresh connection)" "$hz_code in ${hz_time}s"
  if [[ $(w mix non2xx) != 0 ]]; then
    echo
    echo "First non-2xx answers: $(w mix non2xx_samples | head -c 600)"
  fi
  echo
  echo "### Search only (POST /api/v1/search, the same queries, limit $search_limit, newest first)"
  echo
  echo "| run | requests/s | p50 ms | p95 ms | p99 ms | non-2xx | socket errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for r in search search-c1; do
    case $r in
      search) label="wrk -t$threads -c$connections -d${search_duration}s" ;;
      *) label="wrk -t1 -c1 -d${c1_duration}s" ;;
    esac
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(calc '%.0f' "$(w "$r" requests_per_s)")" \
      "$(w "$r" latency_ms.p50)" "$(w "$r" latency_ms.p95)" "$(w "$r" latency_ms.p99)" "$(w "$r" non2xx)" "$(w "$r" socket_errors)"
  done
  echo
  echo "### In-process: \`mailvault search --json --limit $search_limit --sort date\`, best of $reps per query"
  echo
  cat "$work/inproc-table.md"
  echo
  echo "Process start-up (\`mailvault search --help\`, best of $reps): ${ip[startup_ms]} ms. In-process p50 / p95 over"
  echo "the queries: ${ip[p50_ms]} / ${ip[p95_ms]} ms (minus start-up: p95 ${ip[p95_corr_ms]} ms)."
  echo
  echo "### In-process at the same concurrency: \`mailvault-admin api bench-search\`"
  echo
  echo "| threads | searches/s | p50 ms | p95 ms | p99 ms |"
  echo "|---:|---:|---:|---:|---:|"
  for f in "c$connections" c1; do
    printf '| %s | %s | %s | %s | %s |\n' "$(jget "$work/inproc-$f.json" threads)" \
      "$(calc '%.0f' "$(jget "$work/inproc-$f.json" per_second)")" "$(calc '%.2f' "$(jget "$work/inproc-$f.json" p50_ms)")" \
      "$(calc '%.2f' "$(jget "$work/inproc-$f.json" p95_ms)")" "$(calc '%.2f' "$(jget "$work/inproc-$f.json" p99_ms)")"
  done
} >"$report"

positive() { awk -v x="$1" 'BEGIN { exit !(x + 0 > 0) }'; }
api_p95=$(w search latency_ms.p95) api_c1_p95=$(w search-c1 latency_ms.p95)
# a ratio is left empty (its row: SKIP) only when mailvault search never succeeded, which the
# "queries whose API total differs" row already fails
ratio='' ratio_c1='' ratio_corr='' ratio_c1_corr='' little='' ratio_proc=''
if positive "$inproc_p95"; then ratio=$(calc '%.2f' "$api_p95 / $inproc_p95"); fi
if positive "$inproc_c1_p95"; then ratio_c1=$(calc '%.2f' "$api_c1_p95 / $inproc_c1_p95"); fi
if positive "${ip[p95_ms]}"; then ratio_proc=$(calc '%.2f' "$api_p95 / ${ip[p95_ms]}"); fi
if positive "${ip[p95_corr_ms]}"; then
  ratio_corr=$(calc '%.2f' "$api_p95 / ${ip[p95_corr_ms]}")
  ratio_c1_corr=$(calc '%.2f' "$api_c1_p95 / ${ip[p95_corr_ms]}")
fi
if positive "$(w search requests_per_s)"; then
  little=$(calc '%.2f' "$connections * 1000 / $(w search requests_per_s)")
fi
cap_floor=$(calc '%.0f' "0.9 * $rate")
{
  echo
  echo "### Targets"
  echo
  printf "| %-${label_width}s | %12s | %-14s | %-4s |\n" measure value target ''
  printf '|%s|--------------:|----------------|------|\n' "$(printf '%*s' $((label_width + 2)) '' | tr ' ' -)"
  target "mixed run: requests" "$(w mix requests)" '>=' 1
  target "mixed run: socket errors" "$(w mix socket_errors)" '<=' 0
  target "mixed run: non-2xx responses" "$(w mix non2xx)" '<=' 0
  target "GET /healthz after the run, fresh connection (s)" "$hz_value" '<=' 1
  target "capture rate during the run (msgs/s)" "$cap_rate" '>=' "$cap_floor"
  target "smtp-source processes stopped by a refusal" "$src_refused" '<=' 0
  target "acknowledged messages missing from the vault" "$missing" '<=' 0
  target "precheck failures (queries, ids, raw SHA-256)" "$pre_fail" '<=' 0
  target "search only -c$connections: socket errors" "$(w search socket_errors)" '<=' 0
  target "search only -c$connections: non-2xx responses" "$(w search non2xx)" '<=' 0
  target "queries whose API total differs from mailvault's" "$((ip[mismatches] + ip[failed]))" '<=' 0
  target "mailvault audit verify exit status" "$audit_rc" '<=' 0
  target "search p95: API -c$connections / in-process $connections threads" "$ratio" '<=' 2
  info "search p95: API -c$connections (ms)" "$api_p95"
  info "search p95: in-process, $connections threads (ms)" "$inproc_p95"
  info "searches/s: API -c$connections / in-process $connections threads" "$(calc '%.0f' "$(w search requests_per_s)") / $(calc '%.0f' "$inproc_rps")"
  info "search p95: API -c1 / in-process 1 thread" "$ratio_c1"
  info "search p95: API -c$connections / one mailvault search process" "$ratio_proc"
  info "same, start-up subtracted: -c$connections" "$ratio_corr"
  info "queueing floor at -c$connections: conns / req/s (ms)" "$little"
  echo
  echo "Both sides of the target run the same queries at the same concurrency on $(nproc) cores, so both wait"
  echo "for CPU alike; the ratio is what HTTP, JSON, authentication and the audit entry's fsync add. The"
  echo "-c1 ratio is the same overhead without queueing; the one-process ratio compares with a single"
  echo "\`mailvault search\` run, start-up included (what the issue's wording could also mean)."
  n_odd=$(wc -l <"$odd_log")
  if ((n_odd)); then
    echo
    echo "Unexpected lines in the logs ($n_odd; first 20):"
    echo
    head -n 20 "$odd_log" | sed 's/^/    /'
  fi
} >>"$report"

cat "$report"
cat "$report" >>"$results"
log "report appended to $results"
kv() { printf ' %s=%s' "$1" "${2:-n/a}"; }
{
  printf 'api_bench-summary:'
  kv requests "$(w mix requests)"; kv rps "$(w mix requests_per_s)"; kv non2xx "$(w mix non2xx)"
  kv socket_errors "$(w mix socket_errors)"; kv p50_ms "$(w mix latency_ms.p50)"; kv p95_ms "$(w mix latency_ms.p95)"
  kv p99_ms "$(w mix latency_ms.p99)"; kv healthz_s "$hz_time"; kv capture_mps "$cap_rate"
  kv search_p95_ms "$api_p95"; kv search_c1_p95_ms "$api_c1_p95"; kv inproc_p95_ms "${ip[p95_ms]}"
  kv ratio "$ratio"; kv ratio_c1 "$ratio_c1"; kv missing "$missing"; kv audit_rc "$audit_rc"; kv failed "$failed"
  echo
} | tee -a "$results"
((failed)) && exit 1
exit 0
