# Shared by the benchmark scripts (sourced, not run): messages, scratch space, timing under
# /usr/bin/time, best-of bookkeeping, statistics. The sourcing script sets bench_name (for
# messages) before sourcing this, and keep and TIME before using it.

die() { printf '%s: error: %s\n' "$bench_name" "$*" >&2; exit 2; }
log() { printf '%s: %s\n' "$bench_name" "$*" >&2; }

# Statistics over a space-separated list of numbers, and seconds since an $EPOCHREALTIME.
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
maxof() { tr ' ' '\n' <<<"$1" | grep . | sort -g | tail -n 1; }
since() { calc '%.3f' "$EPOCHREALTIME - $1"; }

# bench_scratch PREFIX: makes $work under $TMPDIR, removed at exit unless --keep.
bench_scratch() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() { # shellcheck disable=SC2317  # called by the EXIT trap
  if ((keep)); then log "kept working directory $work"; else rm -rf "$work"; fi
}

# fresh copy of the corpus Maildir at $1 (not timed)
fresh_copy() { rm -rf "$1"; cp -a "$maildir" "$1"; }

# timed NAME LOG CMD...: runs CMD under /usr/bin/time, output to LOG; sets t_sec and t_rss_kb
timed() {
  local name=$1 logf=$2; shift 2
  local tf="$logf.time" rc=0
  "$TIME" -f '%e %M' -o "$tf" "$@" >"$logf" 2>&1 || rc=$?
  if ((rc)); then
    printf '%s: error: %s failed (exit %d); last lines of %s:\n' "$bench_name" "$name" "$rc" "$logf" >&2
    tail -n 20 "$logf" >&2
    ((keep)) || log "(rerun with --keep to inspect $work)"
    exit 2
  fi
  read -r t_sec t_rss_kb < <(tail -n 1 "$tf")
  [[ $t_sec =~ ^[0-9.]+$ && $t_rss_kb =~ ^[0-9]+$ ]] || die "cannot parse $TIME output in $tf"
}

# best-of bookkeeping: sec[tool] = lowest seconds, rss[tool] = highest peak RSS (KiB)
declare -A sec=() rss=()
record() {
  local k=$1
  if [[ -z ${sec[$k]:-} ]] || awk -v a="$t_sec" -v b="${sec[$k]}" 'BEGIN { exit !(a < b) }'; then
    sec[$k]=$t_sec
  fi
  if [[ -z ${rss[$k]:-} ]] || ((t_rss_kb > rss[$k])); then rss[$k]=$t_rss_kb; fi
}

du_b() { du -sb "$1" | cut -f1; }

json_get() { # json_get FILE KEY -> number, or empty if absent
  python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print(v if isinstance(v,(int,float)) and not isinstance(v,bool) else "")' "$1" "$2"
}

# ---- report helpers ----
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
mib() { calc '%.1f' "$1 / 1024"; }

# target LABEL VALUE OP LIMIT [UNIT]: a PASS/FAIL/SKIP row of the targets table (VALUE empty:
# SKIP); a FAIL sets failed=1. The label column is $label_width wide.
failed=0
label_width=${label_width:-48}
target() {
  local label=$1 value=$2 op=$3 limit=$4 unit=${5:-} verdict
  if [[ -z $value ]]; then
    verdict=SKIP value=n/a
  elif awk -v v="$value" -v l="$limit" -v op="$op" \
      'BEGIN { exit !((op == ">=" && v >= l) || (op == "<=" && v <= l)) }'; then
    verdict=PASS
  else
    verdict=FAIL failed=1
  fi
  printf "| %-${label_width}s | %12s | %-14s | %-4s |\n" "$label" "$value$unit" "$op $limit$unit" "$verdict"
}
info() { printf "| %-${label_width}s | %12s | %-14s | %-4s |\n" "$1" "${2:-n/a}" '' ''; }
