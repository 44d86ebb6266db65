#!/usr/bin/env bash
# Offsite replication benchmark (issue 16), three parts against one real Ceph S3 gateway on
# 127.0.0.1 (tests/offsite/servers.sh), same machine, same run:
# 1. Throughput against rclone. A vault of N messages (default 30,000, made from the corpus by
#    bench/make_scale_corpus.py) is imported; its packs/ directory is copied to a bucket with
#    `rclone copy` (the peer, Debian's rclone, an environment-only remote: --transfers 4, its
#    default) and shipped to another bucket with `mailvault offsite sync` (parallel = 4). R runs
#    each, alternating, each into an emptied bucket; throughput = pack bytes / wall time, and the
#    target compares the medians: ours >= 0.9 x rclone's.
# 2. Offsite lag under capture. serve --smtp with the target configured; bench/smtp_load.py
#    sends 150 msg/s for S seconds and writes each 250's wall-clock time. A poller reads
#    `offsite status --json` every 100 ms (through serve) and records when shipped_change (every
#    vault change up to it is offsite) moves. The k-th acknowledged message is vault change
#    base + k (one change per new message, committed in acknowledgement order), so its lag is
#    the first poll at which shipped_change >= base + k minus its 250's time. Target: p99 <= 60 s.
# 3. DR restore against import. The vault of part 1 is shipped once more with its index
#    snapshot (index-snapshot-interval: part 1 compares pack files only), then restored with
#    `mailvault dr restore` from its bucket into an empty directory (download, catalog, the index
#    from its snapshot, every fingerprint verified, audit chain); rate = messages / wall time. Target: >= 2 x the import rate of
#    part 1, and zero differences (the restored `list --json` equals the original's).
#
# usage: bench/offsite_bench.sh [--messages N] [--runs R] [--seconds S] [--keep]
#   defaults: N 30000, R 3, S 60
# Environment: MAILVAULT_BIN (default <repo>/build/release/cli/mailvault), MAILVAULT_CORPUS.
# Needs root (the Ceph daemons), rclone, python3.
set -euo pipefail
bench_name=offsite_bench
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$script_dir/lib.sh"
# shellcheck source=../tests/offsite/servers.sh
source "$script_dir/../tests/offsite/servers.sh"
n=30000 runs=3 seconds=60 keep=0
while (($#)); do
  case $1 in
    --messages) n=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
mv_bin=${MAILVAULT_BIN:-$script_dir/../build/release/cli/mailvault}
[[ -x $mv_bin ]] || die "no mailvault binary at $mv_bin (scripts/build.sh release)"
maildir=${MAILVAULT_CORPUS:-$HOME/.cache/mailvault/corpus/maildir}
[[ -d $maildir/cur ]] || die "no corpus at $maildir (scripts/fetch-corpus.sh)"
command -v rclone >/dev/null || die "rclone is missing (apt-get install rclone)"
bench_scratch mv-offsite-bench
serve_pid=""
stop_serve() {
  [[ -n $serve_pid ]] || return 0
  kill -TERM "$serve_pid" 2>/dev/null
  wait "$serve_pid" 2>/dev/null || true
  serve_pid=""
}
trap 'stop_serve; offsite_cleanup_all; bench_cleanup' EXIT

offsite_start_rgw "$work/s3" >/dev/null || die "the S3 gateway did not start"
offsite_rclone_env

V=$work/vault K=$work/key CONF=$work/mailvault.conf
conf() {  # conf BUCKET [INDEX_SNAPSHOT_INTERVAL]
  printf '[offsite bench]\nurl = s3://127.0.0.1:%s/%s\nno-tls = yes\ncredentials-file = %s\nparallel = 4\nindex-snapshot-interval = %s\n' \
    "$MV_S3_PORT" "$1" "$work/s3/s3.cred" "${2:-0}" >"$CONF"
}
mv() { "$mv_bin" --vault "$V" --key-file "$K" --config "$CONF" "$@"; }
empty_bucket() { offsite_s3req purge "$1" >/dev/null 2>&1 || true; }

# ---- 1. throughput against rclone ----
log "generating $n messages"
python3 "$script_dir/make_scale_corpus.py" --batches 10 "$maildir" "$work/corpus" "$n" 2>"$work/gen.log" || die "make_scale_corpus.py failed"
conf mv-bench
mv init >/dev/null
t0=$EPOCHREALTIME
for b in "$work"/corpus/batch-*; do
  mv import -q --custodian "user${b##*-}@corp.example" "$b" >>"$work/import.log" 2>&1 || die "import of $b failed"
done
import_s=$(since "$t0")
stored=$(json_get <(mv stats --json) messages)
import_rate=$(calc '%.0f' "$stored / $import_s")
pack_bytes=$(find "$V/packs" -name '*.pack' -printf '%s\n' | awk '{s += $1} END {print s}')
packs=$(find "$V/packs" -name '*.pack' | wc -l)
log "imported $stored messages in $import_s s ($import_rate msg/s); $packs packs, $pack_bytes bytes"
mv index run -q >/dev/null 2>&1
ours="" theirs="" ours_wall=""
for r in $(seq "$runs"); do
  for who in rclone mailvault; do
    ((r % 2 == 0)) && who=$([[ $who == rclone ]] && echo mailvault || echo rclone)
    if [[ $who == rclone ]]; then
      empty_bucket rc-bench
      t0=$EPOCHREALTIME
      rclone copy --transfers 4 "$V/packs" MVS3:rc-bench >"$work/rclone.log" 2>&1 || die "rclone copy failed: $(tail -n 3 "$work/rclone.log")"
      s=$(since "$t0"); theirs="$theirs $s"
    else
      empty_bucket mv-bench
      rm -rf "$V/offsite"
      t0=$EPOCHREALTIME
      mv offsite sync >"$work/sync.log" 2>&1 || die "offsite sync failed: $(tail -n 3 "$work/sync.log")"
      wall=$(since "$t0"); ours_wall="$ours_wall $wall"
      # The pass itself ("level at manifest N (...) in S s"): what serve's shipper spends. The
      # command's wall time adds starting mailvault and opening the vault (catalog, state store).
      s=$(grep -o 'in [0-9.]* s$' "$work/sync.log" | tr -dc '0-9.'); ours="$ours $s"
    fi
    log "run $r: $who $s s"
  done
done
ours_s=$(median "$ours") theirs_s=$(median "$theirs")
ours_mbs=$(calc '%.1f' "$pack_bytes / $ours_s / 1048576") theirs_mbs=$(calc '%.1f' "$pack_bytes / $theirs_s / 1048576")
ratio=$(calc '%.2f' "$theirs_s / $ours_s")
ours_wall_s=$(median "$ours_wall")
wall_ratio=$(calc '%.2f' "$theirs_s / $ours_wall_s")
log "throughput: mailvault's pass $ours_mbs MiB/s (runs:$ours; the command's wall time:$ours_wall), rclone $theirs_mbs MiB/s (runs:$theirs): ratio $ratio, $wall_ratio by the command's wall time (target >= 0.9)"

# ---- 3. DR restore against import (the vault of part 1, before part 2 adds to it) ----
# Part 1 compared pack files with rclone (index-snapshot-interval = 0). Now the index snapshot
# goes up too, as serve ships it once a day: a restore catches the index up instead of
# rebuilding it.
conf mv-bench 86400
t0=$EPOCHREALTIME
mv offsite sync >"$work/sync.log" 2>&1 || die "offsite sync with the index failed: $(tail -n 3 "$work/sync.log")"
index_s=$(since "$t0")
index_bytes=$(offsite_s3req raw GET /mv-bench "list-type=2&prefix=index/" | grep -o '<Size>[0-9]*' | tr -dc '0-9\n' | awk '{s += $1} END {print s + 0}')
log "index snapshot: $index_bytes bytes offsite in $index_s s"
mv list --json >"$work/before.list" 2>/dev/null
t0=$EPOCHREALTIME
"$mv_bin" dr restore --from "s3://127.0.0.1:$MV_S3_PORT/mv-bench" --credentials-file "$work/s3/s3.cred" --no-tls \
  --key-file "$K" --vault "$work/restored" >"$work/dr.log" 2>&1 || die "dr restore failed: $(tail -n 5 "$work/dr.log")"
dr_s=$(since "$t0")
dr_rate=$(calc '%.0f' "$stored / $dr_s")
"$mv_bin" --vault "$work/restored" --key-file "$K" list --json >"$work/after.list" 2>/dev/null
ids() { python3 -c 'import json,sys; print("\n".join(sorted(m["id"] for m in json.load(open(sys.argv[1])))))' "$1"; }
differences=$(diff <(ids "$work/before.list") <(ids "$work/after.list") | grep -c '^[<>]' || true)
dr_ratio=$(calc '%.2f' "$dr_rate / $import_rate")
log "dr restore: $stored messages in $dr_s s ($dr_rate msg/s) = $dr_ratio x import; differences: $differences"
grep -E 'downloaded|catalog|index|verified|audit' "$work/dr.log" | sed 's/^/    /' >&2 || true

# ---- 2. offsite lag under capture at 150 msg/s ----
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$mv_bin" --vault "$V" --key-file "$K" --config "$CONF" serve --smtp "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do [[ -S $V/run/control.sock ]] && break; sleep 0.1; done  # (a command meanwhile would take the vault)
mv offsite sync >/dev/null 2>&1 || true
base=$(mv offsite status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["targets"][0]["shipped_change"])')
python3 - "$mv_bin" "$V" "$K" "$CONF" "$work/polls" <<'PY' &
import json, subprocess, sys, time
mv, v, k, conf, out = sys.argv[1:]
with open(out, "w", buffering=1) as f:
    while True:
        try:
            s = json.loads(subprocess.run([mv, "--vault", v, "--key-file", k, "--config", conf, "offsite", "status", "--json"],
                                          capture_output=True, text=True, timeout=10).stdout)
            f.write("%.6f %d\n" % (time.time(), s["targets"][0]["shipped_change"]))
        except Exception:
            pass
        time.sleep(0.1)
PY
poller=$!
python3 "$script_dir/smtp_load.py" --port "$port" --rate 150 --connections 4 --acked "$work/acked" --latency "$work/latency" \
  --ack-times "$work/ack_times" >"$work/load.json" &
load=$!
sleep "$seconds"
kill -TERM "$load"; wait "$load" || true
sleep 5
kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null || true
read -r lag_p50 lag_p99 lag_max acked < <(python3 - "$work/ack_times" "$work/polls" "$base" <<'PY'
import sys
acks = sorted(float(l.split()[0]) for l in open(sys.argv[1]))
polls = [(float(a), int(b)) for a, b in (l.split() for l in open(sys.argv[2]))]
base = int(sys.argv[3])
lags, j = [], 0
for k, t in enumerate(acks, 1):
    while j < len(polls) and polls[j][1] < base + k:
        j += 1
    if j == len(polls):
        lags.append(float("inf"))
        continue
    lags.append(max(0.0, polls[j][0] - t))
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
print("%.2f %.2f %.2f %d" % (q(0.5), q(0.99), lags[-1], len(acks)))
PY
)
stop_serve
log "offsite lag at 150 msg/s for ${seconds}s ($acked acknowledged): p50 $lag_p50 s, p99 $lag_p99 s, max $lag_max s (target p99 <= 60 s)"
log "load: $(cat "$work/load.json")"

cat <<EOF
| measure | result | target |
|---|---|---|
| replication throughput, $packs packs ($pack_bytes bytes): the offsite sync's pass / rclone copy (medians of $runs) | $ours_mbs / $theirs_mbs MiB/s = **$ratio** ($wall_ratio by \`offsite sync\`'s wall time, which adds opening the vault) | >= 0.9 |
| offsite lag (250 -> bytes offsite) under SMTP capture at 150 msg/s, ${seconds} s, $acked messages | p50 $lag_p50 s, **p99 $lag_p99 s**, max $lag_max s | p99 <= 60 s |
| dr restore rate / import rate ($stored messages; the index from its offsite snapshot, $index_bytes bytes) | $dr_rate / $import_rate msg/s = **$dr_ratio**; differences: $differences | >= 2, 0 |
EOF
