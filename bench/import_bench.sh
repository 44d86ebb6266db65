#!/usr/bin/env bash
# Import benchmark: mailvault against mu and notmuch on the SpamAssassin public corpus.
#
# usage: bench/import_bench.sh [--corpus-dir DIR] [--sample] [--runs N] [--tools LIST] [--keep]
#
#   --corpus-dir DIR  corpus to use instead of the default cache. DIR may be a corpus directory
#                     made by scripts/fetch-corpus.sh (its maildir/ is used; it is fetched there
#                     if DIR has neither maildir/ nor cur/), or any Maildir (has cur/).
#   --sample          use the corpus's sample/ Maildir (504 messages) instead of maildir/
#   --runs N          run every timed step N times and keep the best (lowest) time; peak RSS
#                     is the highest seen over the N runs (default 1)
#   --tools LIST      comma-separated subset of mailvault,mu,notmuch (default: all three)
#   --keep            keep the temporary directory (vaults, databases, logs) for inspection
#
# Environment:
#   MAILVAULT_BIN     mailvault binary (default: <repo>/build/release/cli/mailvault)
#   MAILVAULT_CACHE   cache root passed through to scripts/fetch-corpus.sh
#   TMPDIR            where the working copies go (needs ~4x the corpus size free)
#
# For each run, every tool gets its own fresh copy of the Maildir, then:
#   mailvault  mailvault --vault V --key-file K init && mailvault --vault V --key-file K import --no-index COPY
#              (storing only: the index has its own benchmark, bench/index_bench.sh)
#   mu         mu init --maildir=COPY --muhome=H && mu index --muhome=H
#   notmuch    notmuch new, with NOTMUCH_CONFIG pointing at a private config whose
#              database.path is COPY (no hooks, no new.tags, no maildir flag sync)
# each under /usr/bin/time -f '%e %M' (wall seconds, peak RSS KiB). Afterwards mailvault's
# verify is timed (best of N) on the last run's vault and `stats --json` is read.
#
# Output: a Markdown table (tool, messages, seconds, messages/s, peak RSS MiB) and the target
# lines, each PASS, FAIL or SKIP. Exit status: 0 no target failed, 1 some target failed,
# 2 setup or tool error.
set -euo pipefail


script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd "$script_dir/.." && pwd -P)
bench_name=import_bench
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"

corpus_dir='' use_sample=0 runs=1 tools='mailvault,mu,notmuch' keep=0
while (($#)); do
  case $1 in
    --corpus-dir) (($# >= 2)) || die "--corpus-dir needs a directory"; corpus_dir=$2; shift 2 ;;
    --corpus-dir=*) corpus_dir=${1#*=}; shift ;;
    --sample) use_sample=1; shift ;;
    --runs) (($# >= 2)) || die "--runs needs a number"; runs=$2; shift 2 ;;
    --runs=*) runs=${1#*=}; shift ;;
    --tools) (($# >= 2)) || die "--tools needs a list"; tools=$2; shift 2 ;;
    --tools=*) tools=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"

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
selected=$(for t in mailvault mu notmuch; do if has "$t"; then printf "%s " "$t"; fi; done)

# ---- prerequisites (checked before the long-running parts) ---------------------------------
TIME=/usr/bin/time
[[ -x $TIME ]] || die "$TIME not found: install the Debian package 'time' (scripts/install-deps.sh does)"
command -v jq >/dev/null || command -v python3 >/dev/null ||
  die "need jq or python3 to read 'mailvault stats --json'"

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
n_input=$(list_messages "$maildir" -printf '.' | wc -c)
raw_bytes=$(list_messages "$maildir" -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }')
((n_input > 0)) || die "no messages in $maildir"

# ---- scratch space and timing (bench/lib.sh) -------------------------------------------------
label_width=38
bench_scratch mailvault-bench

# ---- the runs -------------------------------------------------------------------------------
unset NOTMUCH_DATABASE NOTMUCH_PROFILE
key=$work/key
vault=$work/vault
declare -A count=()
mu_db_bytes='' nm_db_bytes=''

log "corpus: $maildir ($n_input messages, $raw_bytes bytes); $runs run(s); tools: ${selected% }"
for ((r = 1; r <= runs; r++)); do
  if has mailvault; then
    log "run $r/$runs: mailvault init + import"
    fresh_copy "$work/mv-maildir"
    rm -rf "$vault" "$key"
    # `init` creates a fresh key file (mode 0600) when none exists
    # shellcheck disable=SC2016  # $1.. expand in the inner bash
    timed "mailvault init + import" "$work/mailvault-import.log" bash -c \
      '"$1" --vault "$2" --key-file "$3" init && "$1" --vault "$2" --key-file "$3" import --no-index "$4"' \
      _ "$mv_bin" "$vault" "$key" "$work/mv-maildir"
    record mailvault
    log "  ${t_sec}s, ${t_rss_kb} KiB"
    rm -rf "$work/mv-maildir"
  fi

  if has mu; then
    log "run $r/$runs: mu init + index"
    fresh_copy "$work/mu-maildir"
    rm -rf "$work/muhome"
    # shellcheck disable=SC2016
    timed "mu init + index" "$work/mu.log" bash -c \
      'mu init --quiet --maildir="$1" --muhome="$2" && mu index --quiet --muhome="$2"' \
      _ "$work/mu-maildir" "$work/muhome"
    record mu
    log "  ${t_sec}s, ${t_rss_kb} KiB"
    mu_db_bytes=$(du_b "$work/muhome/xapian")
    count[mu]=$({ mu find --muhome="$work/muhome" --fields=l '' 2>/dev/null || true; } | wc -l)
    rm -rf "$work/mu-maildir" "$work/muhome"
  fi

  if has notmuch; then
    log "run $r/$runs: notmuch new"
    fresh_copy "$work/nm-maildir"
    mkdir -p "$work/nm-xdg"
    cat >"$work/notmuch-config" <<EOF
[database]
path=$work/nm-maildir
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
    export NOTMUCH_CONFIG=$work/notmuch-config
    timed "notmuch new" "$work/notmuch.log" \
      env XDG_CONFIG_HOME="$work/nm-xdg" XDG_DATA_HOME="$work/nm-xdg" \
      notmuch new --quiet --no-hooks
    record notmuch
    log "  ${t_sec}s, ${t_rss_kb} KiB"
    nm_db_bytes=$(du_b "$work/nm-maildir/.notmuch")
    count[notmuch]=$(notmuch count '*')
    nm_files=$(notmuch count --output=files '*')
    unset NOTMUCH_CONFIG
    rm -rf "$work/nm-maildir"
  fi
done

# ---- mailvault verify and stats (on the last run's vault) -----------------------------------
if has mailvault; then
  for ((r = 1; r <= runs; r++)); do
    log "run $r/$runs: mailvault verify"
    timed "mailvault verify" "$work/mailvault-verify.log" \
      "$mv_bin" --vault "$vault" --key-file "$key" verify
    record verify
    log "  ${t_sec}s, ${t_rss_kb} KiB"
  done
  "$mv_bin" --vault "$vault" --key-file "$key" stats --json >"$work/stats.json" 2>"$work/stats.err" ||
    { cat "$work/stats.err" >&2; die "mailvault stats --json failed"; }
  declare -A st=()
  for k in messages raw_bytes stored_bytes duplicates; do
    st[$k]=$(json_get "$work/stats.json" "$k" 2>/dev/null) || true
    [[ -n ${st[$k]} ]] || { cat "$work/stats.json" >&2; die "mailvault stats --json has no numeric top-level '$k'"; }
  done
  count[mailvault]=${st[messages]}
  vault_bytes=$(du_b "$vault")
fi

# ---- report ---------------------------------------------------------------------------------
rate() { calc '%.1f' "$n_input / (${sec[$1]} > 0 ? ${sec[$1]} : 0.005)"; }  # %e has 10 ms resolution


echo
echo "## Import benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- host: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?'), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "- corpus: $maildir: $n_input messages, $raw_bytes bytes (sum of message file sizes)"
echo "- best of $runs run(s); every tool imports its own fresh copy (warm page cache)"
versions=()
has mailvault && versions+=("mailvault $("$mv_bin" --version 2>/dev/null | head -n 1 || true)")
has mu && versions+=("$(mu --version | head -n 1)")
has notmuch && versions+=("$(notmuch --version)")
echo "- versions: $(IFS=';'; echo "${versions[*]}" | sed 's/;/; /g')"
echo
echo "| tool      | messages |  seconds | messages/s | peak RSS MiB |"
echo "|-----------|---------:|---------:|-----------:|-------------:|"
for t in mailvault mu notmuch; do
  has "$t" || continue
  printf '| %-9s | %8s | %8.2f | %10s | %12s |\n' "$t" "${count[$t]}" "${sec[$t]}" "$(rate "$t")" "$(mib "${rss[$t]}")"
done
if has mailvault; then
  printf '| %-9s | %8s | %8.2f | %10s | %12s |\n' "(verify)" "${count[mailvault]}" "${sec[verify]}" "$(rate verify)" "$(mib "${rss[verify]}")"
fi
echo
echo "messages = what the tool holds afterwards (mailvault: stats.messages; mu: mu find ''; notmuch:"
echo "notmuch count, unique Message-IDs). messages/s = $n_input input messages / seconds, for every tool."
has notmuch && echo "notmuch indexed $nm_files files."
if has mailvault; then
  echo "mailvault stats: messages=${st[messages]} duplicates=${st[duplicates]} raw_bytes=${st[raw_bytes]} stored_bytes=${st[stored_bytes]}; vault du -sb=$vault_bytes"
  ((st[messages] + st[duplicates] == n_input)) ||
    echo "NOTE: messages + duplicates = $((st[messages] + st[duplicates])), input has $n_input"
fi
echo
echo "| measure                                |        value | target         |      |"
echo "|----------------------------------------|-------------:|----------------|------|"
r_mu='' r_nm='' r_du='' r_st='' r_iv='' r_rss=''
if has mailvault; then
  r_du=$(calc '%.3f' "$vault_bytes / $raw_bytes")
  r_st=$(calc '%.3f' "${st[stored_bytes]} / $raw_bytes")
  r_iv=$(calc '%.2f' "${sec[mailvault]} / (${sec[verify]} > 0 ? ${sec[verify]} : 0.005)")
  r_rss=$(mib "${rss[mailvault]}")
  has mu && r_mu=$(calc '%.2f' "$(rate mailvault) / $(rate mu)")
  has notmuch && r_nm=$(calc '%.2f' "$(rate mailvault) / $(rate notmuch)")
fi
target "mailvault msgs/s / mu msgs/s" "$r_mu" '>=' 5
info   "mailvault msgs/s / notmuch msgs/s" "$r_nm"
target "vault du -sb / raw bytes" "$r_du" '<=' 0.30
target "stats stored_bytes / raw bytes" "$r_st" '<=' 0.30
target "import time / verify time" "$r_iv" '>=' 3
target "import peak RSS (MiB)" "$r_rss" '<=' 300
has mu && info "mu db (xapian/) / raw bytes" "$(calc '%.3f' "$mu_db_bytes / $raw_bytes")"
has notmuch && info "notmuch db (.notmuch/) / raw bytes" "$(calc '%.3f' "$nm_db_bytes / $raw_bytes")"
echo
((failed)) && exit 1
exit 0
