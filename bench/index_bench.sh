#!/usr/bin/env bash
# Full-text index benchmark (issue 3): mailvault against mu and notmuch on the SpamAssassin
# public corpus: import with indexing, index size, search latency, and optionally a scale run.
#
# usage: bench/index_bench.sh [--corpus-dir DIR] [--sample] [--runs N] [--reps N] [--scale N]
#                             [--same-limit] [--tools LIST] [--keep]
#
#   --corpus-dir DIR  corpus to use instead of the default cache. DIR may be a corpus directory
#                     made by scripts/fetch-corpus.sh (its maildir/ is used; it is fetched there
#                     if DIR has neither maildir/ nor cur/), or any Maildir (has cur/).
#   --sample          use the corpus's sample/ Maildir (504 messages) instead of maildir/
#   --runs N          run every import N times and keep the best (lowest) time; peak RSS is the
#                     highest seen over the N runs; searches use the last run's index (default 1)
#   --reps N          time every query of the mix N times per tool, keep the median (default 5;
#                     one untimed warm-up pass comes first)
#   --scale N         also run the scale part with N generated messages (N >= 10; the full run
#                     uses 200000). mailvault only. Default: off
#   --same-limit      give mu and notmuch the same 50-result limit as mailvault (mu find
#                     --maxnum=50, notmuch search --limit=50). Default: the issue's commands,
#                     where mu and notmuch print every match
#   --tools LIST      comma-separated subset of mailvault,mu,notmuch (default: all three)
#   --keep            keep the temporary directory (vaults, databases, logs) for inspection
#
# Environment:
#   MAILVAULT_BIN     mailvault binary (default: <repo>/build/release/cli/mailvault)
#   MAILVAULT_CACHE   cache root passed through to scripts/fetch-corpus.sh
#   TMPDIR            where the working copies go (needs ~6x the corpus size free; the scale
#                     part needs about 2.5 x N x 5.4 KB more)
#
# 1. Import with full-text index. For each run, every tool gets its own fresh copy of the
#    Maildir (the copy is not timed), then, under /usr/bin/time -f '%e %M':
#      mailvault  mailvault --vault V --key-file K init && mailvault --vault V --key-file K import COPY
#      mu         mu init --maildir=COPY --muhome=H && mu index --muhome=H
#      notmuch    notmuch new, with NOTMUCH_CONFIG pointing at a private config whose
#                 database.path is COPY (no hooks, no new.tags, no maildir flag sync)
# 2. Index size: du -sb of V/index, H/xapian and COPY/.notmuch, each / raw bytes (the sum of
#    the sizes of the message files).
# 3. Search latency, on the last run's indexes, for every query of bench/search_mix.tsv (column
#    1 mailvault, 2 mu, 3 notmuch), stdout to /dev/null, timed with python3 perf_counter:
#      mailvault --vault V --key-file K search --limit 50 -- Q
#      mu find --muhome=H Q            (exit status 4 = no match, not an error)
#      notmuch search Q
#    Per query the median of --reps runs; per tool the median over the mix.
# 4. Scale (--scale N): bench/make_scale_corpus.py makes N messages from the corpus in 10
#    Maildirs of N/10; one fresh vault (init not timed) imports them with 10 `mailvault import`
#    commands, each timed. Reported: every batch's rate, last / first, peak RSS over all
#    batches, V/index / raw bytes, and the median search latency of the mix at the end.
#
# Output: Markdown tables per part and the target lines, each PASS, FAIL or SKIP. Exit status:
# 0 no target failed, 1 some target failed, 2 setup or tool error (including a query that a
# tool rejected; the report is still printed).
set -euo pipefail


script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
bench_name=index_bench
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"
mix=$script_dir/search_mix.tsv
scale_gen=$script_dir/make_scale_corpus.py
SCALE_BATCHES=10
SEARCH_LIMIT=50

corpus_dir='' use_sample=0 runs=1 reps=5 scale=0 same_limit=0 tools='mailvault,mu,notmuch' keep=0
while (($#)); do
  case $1 in
    --corpus-dir) (($# >= 2)) || die "--corpus-dir needs a directory"; corpus_dir=$2; shift 2 ;;
    --corpus-dir=*) corpus_dir=${1#*=}; shift ;;
    --sample) use_sample=1; shift ;;
    --runs) (($# >= 2)) || die "--runs needs a number"; runs=$2; shift 2 ;;
    --runs=*) runs=${1#*=}; shift ;;
    --reps) (($# >= 2)) || die "--reps needs a number"; reps=$2; shift 2 ;;
    --reps=*) reps=${1#*=}; shift ;;
    --scale) (($# >= 2)) || die "--scale needs a number"; scale=$2; shift 2 ;;
    --scale=*) scale=${1#*=}; shift ;;
    --same-limit) same_limit=1; shift ;;
    --tools) (($# >= 2)) || die "--tools needs a list"; tools=$2; shift 2 ;;
    --tools=*) tools=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer, got '$reps'"
[[ $scale =~ ^[0-9]+$ ]] || die "--scale must be a number of messages, got '$scale'"
((scale == 0 || scale >= SCALE_BATCHES)) || die "--scale must be at least $SCALE_BATCHES"

declare -A want=()
IFS=',' read -r -a tool_list <<<"$tools"
for t in "${tool_list[@]}"; do
  case $t in
    mailvault|mu|notmuch) want[$t]=1 ;;
    '') ;;
    *) die "unknown tool '$t' in --tools (choose from mailvault,mu,notmuch)" ;;
  esac
done
((${#want[@]})) || die "--tools selects nothing"
has() { [[ -n ${want[$1]:-} ]]; }
selected=$(for t in mailvault mu notmuch; do if has "$t"; then printf "%s," "$t"; fi; done)
selected=${selected%,}
if ((scale)) && ! has mailvault; then
  log "--scale is a mailvault-only part and --tools leaves mailvault out: skipping it"
  scale=0
fi

# ---- prerequisites (checked before the long-running parts) ---------------------------------
TIME=/usr/bin/time
[[ -x $TIME ]] || die "$TIME not found: install the Debian package 'time' (scripts/install-deps.sh does)"
command -v python3 >/dev/null || die "python3 not found (times the searches, makes the scale corpus)"
[[ -f $mix ]] || die "search mix not found: $mix"
n_queries=$(python3 - "$mix" <<'EOF'
import sys
n = 0
for no, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        continue
    cols = line.split("\t")
    if len(cols) != 3 or not all(c.strip() for c in cols):
        sys.exit(f"{sys.argv[1]}:{no}: need 3 non-empty TAB-separated columns, got {len(cols)}")
    n += 1
print(n)
EOF
) || die "bad search mix"
((n_queries >= 20)) || log "warning: the search mix has only $n_queries queries (the issue asks for >= 20)"

mv_bin=${MAILVAULT_BIN:-$repo_root/build/release/cli/mailvault}
if has mailvault; then
  [[ -f $mv_bin && -x $mv_bin ]] ||
    die "mailvault binary not found or not executable: $mv_bin
  build it first (release build into build/release/), or point MAILVAULT_BIN at it,
  or run only the comparison tools with: $0 --tools mu,notmuch"
  mv_bin=$(cd "$(dirname "$mv_bin")" && pwd -P)/$(basename "$mv_bin")
fi
if has mu; then
  command -v mu >/dev/null ||
    die "mu not found: install maildir-utils (MAILVAULT_WITH_BENCH=1 scripts/install-deps.sh)"
fi
if has notmuch; then
  command -v notmuch >/dev/null ||
    die "notmuch not found: install notmuch (MAILVAULT_WITH_BENCH=1 scripts/install-deps.sh)"
fi
((scale == 0)) || [[ -f $scale_gen ]] || die "scale corpus generator not found: $scale_gen"

# ---- corpus ---------------------------------------------------------------------------------
fetch() { "$repo_root/scripts/fetch-corpus.sh" "$@" | tail -n 1; }
if [[ -z $corpus_dir ]]; then
  corpus_dir=$(fetch) || die "scripts/fetch-corpus.sh failed"
elif [[ ! -d $corpus_dir/maildir/cur && ! -d $corpus_dir/cur ]]; then
  corpus_dir=$(fetch --dest "$corpus_dir") || die "scripts/fetch-corpus.sh --dest $corpus_dir failed"
fi
corpus_dir=$(cd "$corpus_dir" && pwd -P)
if [[ -d $corpus_dir/cur ]]; then
  ((use_sample == 0)) || die "--sample needs a corpus directory, but $corpus_dir is a Maildir"
  maildir=$corpus_dir
elif ((use_sample)); then
  maildir=$corpus_dir/sample
else
  maildir=$corpus_dir/maildir
fi
[[ -d $maildir/cur ]] || die "not a Maildir (no cur/): $maildir"

# message files: everything in any cur/ or new/ below the Maildir (Maildir++ subfolders too)
list_messages() {
  find "$1" -type f \( -path '*/cur/*' -o -path '*/new/*' \) -not -path '*/.notmuch/*' "${@:2}"
}
sum_sizes() { list_messages "$1" -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }'; }
n_input=$(list_messages "$maildir" -printf '.' | wc -c)
raw_bytes=$(sum_sizes "$maildir")
((n_input > 0)) || die "no messages in $maildir"

# ---- scratch space and timing (bench/lib.sh) -------------------------------------------------
label_width=48
bench_scratch mailvault-index-bench

mvc() { "$mv_bin" --vault "$1" --key-file "$key" "${@:2}"; }
# mv_indexed VAULT: the number of messages the index holds (`count -- '*'`), or empty
mv_indexed() {
  local n
  n=$(mvc "$1" count -- '*' 2>/dev/null | tail -n 1) || return 0
  [[ $n =~ ^[0-9]+$ ]] && printf '%s' "$n"
  return 0
}

# ---- search timing (python3: perf_counter around subprocess) --------------------------------
# search_mix TOOLS REPS SUMMARY_FILE: prints the per-query Markdown table; writes one line per
# tool to SUMMARY_FILE: tool, median over the mix (ms), mean (ms), slowest query (ms), queries
# timed, queries that failed. Reads the databases from S_MV_VAULT, S_MU_HOME, S_NM_CONFIG.
search_mix() {
  S_TOOLS=$1 S_REPS=$2 S_SUMMARY=$3 S_MIX=$mix S_MV_BIN=$mv_bin S_KEY=${key:-} \
  S_LIMIT=$SEARCH_LIMIT S_SAME_LIMIT=$same_limit S_NM_XDG=$work/nm-xdg \
  python3 - <<'EOF'
import os, statistics, subprocess, sys, time

env = os.environ
tools = env["S_TOOLS"].split(",")
reps = int(env["S_REPS"])
limit = env["S_LIMIT"]
same = env["S_SAME_LIMIT"] == "1"

queries = []  # (label, [mailvault, mu, notmuch])
label = ""
for line in open(env["S_MIX"], encoding="utf-8"):
    line = line.rstrip("\n")
    if line.startswith("#"):
        label = line[1:].strip()
        continue
    if not line.strip():
        continue
    queries.append((label, line.split("\t")))
    label = ""

nm_env = dict(env, NOTMUCH_CONFIG=env.get("S_NM_CONFIG", ""), XDG_CONFIG_HOME=env["S_NM_XDG"],
              XDG_DATA_HOME=env["S_NM_XDG"])
for k in ("NOTMUCH_DATABASE", "NOTMUCH_PROFILE"):
    nm_env.pop(k, None)

def search_cmd(tool, q):
    if tool == "mailvault":
        return [env["S_MV_BIN"], "--vault", env["S_MV_VAULT"], "--key-file", env["S_KEY"],
                "search", "--limit", limit, "--", q], None
    if tool == "mu":
        extra = ["--maxnum=" + limit] if same else []
        return ["mu", "find", "--muhome=" + env["S_MU_HOME"]] + extra + [q], None
    extra = ["--limit=" + limit] if same else []
    return ["notmuch", "search"] + extra + [q], nm_env

def ok(tool, rc):
    return rc == 0 or (tool == "mu" and rc == 4)  # mu find: 4 = no match

def run(cmd, cenv, out=subprocess.DEVNULL):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE,
                       env=cenv)
    return time.perf_counter() - t0, p

col = {"mailvault": 0, "mu": 1, "notmuch": 2}
failed = {}   # (qi, tool) -> message
hits = {}     # (qi, tool) -> str
times = {}    # (qi, tool) -> [seconds]

# warm-up pass: checks every query runs, and counts matches (untimed)
for qi, (label, qs) in enumerate(queries):
    for tool in tools:
        q = qs[col[tool]]
        cmd, cenv = search_cmd(tool, q)
        _, p = run(cmd, cenv, out=subprocess.PIPE)
        if not ok(tool, p.returncode):
            err = p.stderr.decode(errors="replace").strip().splitlines()
            failed[(qi, tool)] = f"exit {p.returncode}: {err[-1] if err else ''}"
            print(f"index_bench: error: {tool} query {qi + 1} ({q!r}) failed, "
                  f"{failed[(qi, tool)]}", file=sys.stderr)
            continue
        times[(qi, tool)] = []
        if tool == "mu":  # without --maxnum, one line per message
            c = subprocess.run(["mu", "find", "--muhome=" + env["S_MU_HOME"], "--fields=l", q],
                               stdin=subprocess.DEVNULL, capture_output=True)
            hits[(qi, tool)] = (str(len(c.stdout.splitlines())) if ok(tool, c.returncode)
                                else "?")
        elif tool == "notmuch":
            c = subprocess.run(["notmuch", "count", q], stdin=subprocess.DEVNULL,
                               capture_output=True, env=cenv)
            hits[(qi, tool)] = c.stdout.decode().strip() if c.returncode == 0 else "?"
        else:
            c = subprocess.run([env["S_MV_BIN"], "--vault", env["S_MV_VAULT"], "--key-file",
                                env["S_KEY"], "count", "--", q], stdin=subprocess.DEVNULL,
                               capture_output=True)
            lines = c.stdout.decode(errors="replace").split()
            hits[(qi, tool)] = lines[-1] if c.returncode == 0 and lines else "?"
print(f"index_bench: warm-up pass done ({len(queries)} queries)", file=sys.stderr)

# timed passes, interleaved (rep, query, tool) so drift hits every tool alike
for r in range(reps):
    for qi, (label, qs) in enumerate(queries):
        for tool in tools:
            if (qi, tool) in failed:
                continue
            cmd, cenv = search_cmd(tool, qs[col[tool]])
            dt, p = run(cmd, cenv)
            if not ok(tool, p.returncode):
                failed[(qi, tool)] = f"exit {p.returncode} on repetition {r + 1}"
                print(f"index_bench: error: {tool} query {qi + 1} failed: {failed[(qi, tool)]}",
                      file=sys.stderr)
                continue
            times[(qi, tool)].append(dt)
    print(f"index_bench: search repetition {r + 1}/{reps}", file=sys.stderr)

med = {k: statistics.median(v) * 1000 for k, v in times.items() if v and k not in failed}

def cell(s):
    return s.replace("|", "\\|")

head = "| # | what | " + " | ".join(f"{t} ms" for t in tools) + " | hits " + "/".join(tools) + " |"
print(head)
print("|--:|------|" + "|".join("------:" for _ in tools) + "|------|")
for qi, (label, qs) in enumerate(queries):
    ms = []
    for tool in tools:
        ms.append("err" if (qi, tool) in failed else f"{med[(qi, tool)]:.1f}")
    h = "/".join("err" if (qi, t) in failed else hits.get((qi, t), "?") for t in tools)
    what = label or qs[0]
    print(f"| {qi + 1} | {cell(what)}: `{cell(qs[col[tools[0]]])}` | " + " | ".join(ms) + f" | {h} |")

with open(env["S_SUMMARY"], "w") as f:
    for tool in tools:
        v = [med[(qi, tool)] for qi in range(len(queries)) if (qi, tool) in med]
        nfail = sum(1 for qi in range(len(queries)) if (qi, tool) in failed)
        if v:
            f.write(f"{tool} {statistics.median(v):.2f} {statistics.mean(v):.2f} {max(v):.2f} "
                    f"{len(v)} {nfail}\n")
        else:
            f.write(f"{tool} - - - 0 {nfail}\n")
EOF
}

# ---- 1. import with full-text index ---------------------------------------------------------
unset NOTMUCH_DATABASE NOTMUCH_PROFILE NOTMUCH_CONFIG
key=$work/key
vault=$work/vault
muhome=$work/muhome
nm_copy=$work/nm-maildir
nm_config=$work/notmuch-config
mkdir -p "$work/nm-xdg"
cat >"$nm_config" <<EOF
[database]
path=$nm_copy
hook_dir=$work/nm-no-hooks
[user]
name=mailvault bench
primary_email=bench@example.invalid
[new]
tags=
ignore=
[search]
exclude_tags=
[maildir]
synchronize_flags=false
EOF
declare -A count=() indexed=() idx_bytes=()

log "corpus: $maildir ($n_input messages, $raw_bytes bytes); $runs import run(s), $reps search rep(s); tools: $selected"
for ((r = 1; r <= runs; r++)); do
  if has mailvault; then
    log "run $r/$runs: mailvault init + import"
    fresh_copy "$work/mv-maildir"
    rm -rf "$vault" "$key"
    # `init` creates a fresh key file (mode 0600) when none exists
    # shellcheck disable=SC2016  # $1.. expand in the inner bash
    timed "mailvault init + import" "$work/mailvault-import.log" bash -c \
      '"$1" --vault "$2" --key-file "$3" init && "$1" --vault "$2" --key-file "$3" import "$4"' \
      _ "$mv_bin" "$vault" "$key" "$work/mv-maildir"
    record mailvault
    log "  ${t_sec}s, ${t_rss_kb} KiB"
    rm -rf "$work/mv-maildir"
  fi

  if has mu; then
    log "run $r/$runs: mu init + index"
    fresh_copy "$work/mu-maildir"
    rm -rf "$muhome"
    # shellcheck disable=SC2016
    timed "mu init + index" "$work/mu.log" bash -c \
      'mu init --quiet --maildir="$1" --muhome="$2" && mu index --quiet --muhome="$2"' \
      _ "$work/mu-maildir" "$muhome"
    record mu
    log "  ${t_sec}s, ${t_rss_kb} KiB"
  fi

  if has notmuch; then
    log "run $r/$runs: notmuch new"
    fresh_copy "$nm_copy"
    timed "notmuch new" "$work/notmuch.log" \
      env NOTMUCH_CONFIG="$nm_config" XDG_CONFIG_HOME="$work/nm-xdg" XDG_DATA_HOME="$work/nm-xdg" \
      notmuch new --quiet --no-hooks
    record notmuch
    log "  ${t_sec}s, ${t_rss_kb} KiB"
  fi
done

# what each index holds, and its size (last run)
if has mailvault; then
  [[ -d $vault/index ]] || die "the vault has no index/ folder after import ($vault/index): is this a mailvault with full-text indexing (issue 3)?"
  idx_bytes[mailvault]=$(du_b "$vault/index")
  count[mailvault]=''
  if mvc "$vault" stats --json >"$work/stats.json" 2>"$work/stats.err"; then
    count[mailvault]=$(json_get "$work/stats.json" messages 2>/dev/null) || count[mailvault]=''
  fi
  indexed[mailvault]=$(mv_indexed "$vault")
fi
if has mu; then
  idx_bytes[mu]=$(du_b "$muhome/xapian")
  count[mu]=$({ mu find --muhome="$muhome" --fields=l '' 2>/dev/null || true; } | wc -l)
  indexed[mu]=${count[mu]}
fi
if has notmuch; then
  idx_bytes[notmuch]=$(du_b "$nm_copy/.notmuch")
  nmc() { env NOTMUCH_CONFIG="$nm_config" XDG_CONFIG_HOME="$work/nm-xdg" XDG_DATA_HOME="$work/nm-xdg" notmuch "$@"; }
  count[notmuch]=$(nmc count '*')
  indexed[notmuch]=$(nmc count --output=files '*')
fi

# ---- 3. search latency ----------------------------------------------------------------------
search_errors=0
log "search mix: $n_queries queries x $reps rep(s) x tools $selected"
S_MV_VAULT=$vault S_MU_HOME=$muhome S_NM_CONFIG=$nm_config \
  search_mix "$selected" "$reps" "$work/search-summary" >"$work/search-table.md"
declare -A s_med=() s_mean=() s_max=() s_n=() s_fail=()
while read -r t a b c n f; do
  s_med[$t]=$a s_mean[$t]=$b s_max[$t]=$c s_n[$t]=$n s_fail[$t]=$f
  ((f == 0)) || search_errors=1
done <"$work/search-summary"

# ---- 4. scale -------------------------------------------------------------------------------
declare -a b_n=() b_sec=() b_rss=() b_idx=()
if ((scale)); then
  svault=$work/scale-vault
  sdir=$work/scale-corpus
  log "scale: generating $scale messages in $SCALE_BATCHES batches from $maildir"
  python3 "$scale_gen" --batches "$SCALE_BATCHES" "$maildir" "$sdir" "$scale" ||
    die "bench/make_scale_corpus.py failed"
  scale_raw=$(sum_sizes "$sdir")
  rm -rf "$svault"
  mvc "$svault" init >"$work/scale-init.log" 2>&1 ||
    { tail -n 20 "$work/scale-init.log" >&2; die "mailvault init (scale vault) failed"; }
  b=0
  for bd in "$sdir"/batch-*; do
    b_n[b]=$(list_messages "$bd" -printf '.' | wc -c)
    log "scale: batch $((b + 1))/$SCALE_BATCHES: import ${b_n[b]} messages"
    timed "mailvault import (scale batch $((b + 1)))" "$work/scale-import-$((b + 1)).log" \
      "$mv_bin" --vault "$svault" --key-file "$key" import "$bd"
    b_sec[b]=$t_sec b_rss[b]=$t_rss_kb
    b_idx[b]=$(du_b "$svault/index")
    log "  ${t_sec}s, ${t_rss_kb} KiB, index ${b_idx[b]} bytes"
    b=$((b + 1))
  done
  ((b == SCALE_BATCHES)) || die "expected $SCALE_BATCHES batch Maildirs in $sdir, found $b"
  scale_count=''
  if mvc "$svault" stats --json >"$work/scale-stats.json" 2>/dev/null; then
    scale_count=$(json_get "$work/scale-stats.json" messages 2>/dev/null) || scale_count=''
  fi
  scale_indexed=$(mv_indexed "$svault")
  log "scale: search mix on the scale vault"
  S_MV_VAULT=$svault search_mix mailvault "$reps" "$work/scale-search-summary" \
    >"$work/scale-search-table.md"
  read -r _ sc_med sc_mean sc_max _ sc_fail <"$work/scale-search-summary"
  ((sc_fail == 0)) || search_errors=1
fi

# ---- report ---------------------------------------------------------------------------------
nz() { printf '(%s > 0 ? %s : 0.005)' "$1" "$1"; }  # %e has 10 ms resolution
rate() { calc '%.1f' "$n_input / $(nz "${sec[$1]}")"; }
num() { [[ $1 =~ ^[0-9.]+$ ]]; }


echo
echo "## Index benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- host: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?'), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "- corpus: $maildir: $n_input messages, $raw_bytes bytes (sum of message file sizes)"
echo "- imports: best of $runs run(s), every tool on its own fresh copy (warm page cache); searches: median of $reps run(s) per query after a warm-up pass, on the last run's indexes"
if ((same_limit)); then
  echo "- search commands: mailvault search --limit $SEARCH_LIMIT; mu find --maxnum=$SEARCH_LIMIT; notmuch search --limit=$SEARCH_LIMIT (--same-limit)"
else
  echo "- search commands: mailvault search --limit $SEARCH_LIMIT; mu find and notmuch search without a limit (every match printed; --same-limit changes that)"
fi
versions=()
has mailvault && versions+=("mailvault $("$mv_bin" --version 2>/dev/null | head -n 1 || true)")
has mu && versions+=("$(mu --version | head -n 1)")
has notmuch && versions+=("$(notmuch --version)")
versions_s=$(IFS=';'; echo "${versions[*]}")
echo "- versions: ${versions_s//;/; }"
echo
echo "### Import with full-text index"
echo
echo "| tool      | messages | indexed |  seconds | messages/s | peak RSS MiB |"
echo "|-----------|---------:|--------:|---------:|-----------:|-------------:|"
for t in mailvault mu notmuch; do
  has "$t" || continue
  printf '| %-9s | %8s | %7s | %8.2f | %10s | %12s |\n' "$t" "${count[$t]:-n/a}" \
    "${indexed[$t]:-n/a}" "${sec[$t]}" "$(rate "$t")" "$(mib "${rss[$t]}")"
done
echo
echo "messages/s = $n_input input messages / seconds, for every tool. messages = what the tool holds"
echo "(mailvault: stats --json messages; mu: mu find ''; notmuch: notmuch count, unique Message-IDs);"
echo "indexed = what its index finds (mailvault: count -- '*'; mu: the same as messages; notmuch: files)."
echo
echo "### Index size"
echo
echo "| tool      | index                     |        bytes | ÷ raw bytes |"
echo "|-----------|---------------------------|-------------:|------------:|"
declare -A idx_ratio=()
for t in mailvault mu notmuch; do
  has "$t" || continue
  case $t in mailvault) where='vault/index/' ;; mu) where='muhome/xapian/' ;; notmuch) where='Maildir/.notmuch/' ;; esac
  idx_ratio[$t]=$(calc '%.3f' "${idx_bytes[$t]} / $raw_bytes")
  printf '| %-9s | %-25s | %12s | %11s |\n' "$t" "$where" "${idx_bytes[$t]}" "${idx_ratio[$t]}"
done
echo
echo "### Search latency ($n_queries queries, bench/search_mix.tsv)"
echo
cat "$work/search-table.md"
echo
echo "ms = median wall time of the command (process start to exit, output to /dev/null). hits ="
echo "matching messages (mailvault: count; mu: lines of mu find --fields=l; notmuch: notmuch count)."
echo
echo "| tool      | median over the mix ms | mean ms | slowest query ms | queries timed | failed |"
echo "|-----------|-----------------------:|--------:|-----------------:|--------------:|-------:|"
for t in mailvault mu notmuch; do
  has "$t" || continue
  printf '| %-9s | %22s | %7s | %16s | %13s | %6s |\n' "$t" "${s_med[$t]}" "${s_mean[$t]}" \
    "${s_max[$t]}" "${s_n[$t]}" "${s_fail[$t]}"
done
if ((scale)); then
  echo
  echo "### Scale: $scale messages ($scale_raw bytes) imported into one vault in $SCALE_BATCHES batches"
  echo
  echo "| batch | messages | seconds | messages/s | peak RSS MiB | index bytes after |"
  echo "|------:|---------:|--------:|-----------:|-------------:|------------------:|"
  scale_rss=0
  for ((b = 0; b < SCALE_BATCHES; b++)); do
    printf '| %5d | %8d | %7.2f | %10s | %12s | %17s |\n' "$((b + 1))" "${b_n[b]}" "${b_sec[b]}" \
      "$(calc '%.1f' "${b_n[b]} / $(nz "${b_sec[b]}")")" "$(mib "${b_rss[b]}")" "${b_idx[b]}"
    if ((b_rss[b] > scale_rss)); then scale_rss=${b_rss[b]}; fi
  done
  echo
  echo "The vault holds ${scale_count:-n/a} messages; its index finds ${scale_indexed:-n/a}."
  echo "Search mix on the scale vault (mailvault, median of $reps per query; most date and msgid"
  echo "queries match nothing here, as the generated Dates are 2019-2023 and the Message-IDs new):"
  echo
  cat "$work/scale-search-table.md"
  echo
  echo "mailvault on the scale vault: median over the mix ${sc_med} ms, mean ${sc_mean} ms, slowest query ${sc_max} ms."
fi
echo
echo "### Targets"
echo
echo "| measure                                          |        value | target         |      |"
echo "|--------------------------------------------------|-------------:|----------------|------|"
r_imp_mu='' r_imp_nm='' r_idx='' r_s_mu='' r_s_nm='' s_ok=0
if has mailvault; then
  r_idx=${idx_ratio[mailvault]}
  num "${s_med[mailvault]}" && s_ok=1
  has mu && r_imp_mu=$(calc '%.2f' "$(rate mailvault) / $(rate mu)")
  has notmuch && r_imp_nm=$(calc '%.2f' "$(rate mailvault) / $(rate notmuch)")
  ((s_ok)) && has mu && num "${s_med[mu]}" && r_s_mu=$(calc '%.3f' "${s_med[mailvault]} / ${s_med[mu]}")
  ((s_ok)) && has notmuch && num "${s_med[notmuch]}" && r_s_nm=$(calc '%.3f' "${s_med[mailvault]} / ${s_med[notmuch]}")
fi
target "import msgs/s: mailvault / mu" "$r_imp_mu" '>=' 2
info   "import msgs/s: mailvault / notmuch" "$r_imp_nm"
target "index bytes / raw bytes: mailvault" "$r_idx" '<=' 0.6
has mu && info "index bytes / raw bytes: mu" "${idx_ratio[mu]}"
has notmuch && info "index bytes / raw bytes: notmuch" "${idx_ratio[notmuch]}"
target "search median over the mix: mailvault / mu" "$r_s_mu" '<=' 0.5
info   "search median over the mix: mailvault / notmuch" "$r_s_nm"
if ((scale)); then
  r_slow=$(calc '%.3f' "(${b_n[SCALE_BATCHES - 1]} / $(nz "${b_sec[SCALE_BATCHES - 1]}")) / (${b_n[0]} / $(nz "${b_sec[0]}"))")
  info   "scale: first batch msgs/s" "$(calc '%.1f' "${b_n[0]} / $(nz "${b_sec[0]}")")"
  info   "scale: last batch msgs/s" "$(calc '%.1f' "${b_n[SCALE_BATCHES - 1]} / $(nz "${b_sec[SCALE_BATCHES - 1]}")")"
  target "scale: last batch rate / first batch rate" "$r_slow" '>=' 0.7
  target "scale: peak RSS over all batches (MiB)" "$(mib "$scale_rss")" '<=' 1024
  info   "scale: index bytes / raw bytes" "$(calc '%.3f' "${b_idx[SCALE_BATCHES - 1]} / $scale_raw")"
  info   "scale: search median over the mix (ms)" "${sc_med:-}"
else
  target "scale: last batch rate / first batch rate" '' '>=' 0.7
  target "scale: peak RSS over all batches (MiB)" '' '<=' 1024
fi
echo
if ((search_errors)); then
  log "error: some queries failed (see the 'err' cells and the messages above)"
  exit 2
fi
((failed)) && exit 1
exit 0
