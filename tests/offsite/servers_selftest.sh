#!/usr/bin/env bash
# Self-test of tests/offsite/servers.sh: the real offsite targets work as the replication
# tests will use them, and every fault helper does what it says.
#   1. RGW: start (time, memory), s3.cred, SigV4 enforced (anonymous PUT, a wrong secret and
#      a signature without x-amz-content-sha256 are refused), put/get/list/delete with s3cmd
#      (one multipart upload), the same with an environment-only rclone remote, versioning
#      (versions and delete markers listed, then purged to nothing), kill -9 radosgw and
#      restart it (objects survive), clock skew through faketime.
#   2. SFTP: start, put/get/ls/rename/rm with sftp(1) and the pinned host key, a wrong host
#      key refused, kill -9 and restart, a full 2 MB disk, unmount.
#   3. Proxy in front of RGW and of sshd: throttling really limits throughput, "drop reset"
#      breaks a transfer at once and refuses new connections, "drop blackhole" hangs them,
#      restore works.
#   4. Clean-up: nothing left running or mounted; the watchdog cleans up after a test shell
#      that was kill -9'd.
# Needs root and the packages ceph-mon ceph-osd radosgw s3cmd rclone openssh-server faketime
# curl. Exit status: 0 pass, 1 fail, 77 skipped (not root or a tool missing). KEEP=1 keeps
# the work directory; it is also kept (and named) on failure.
# shellcheck disable=SC2015,SC2119,SC2143  # "check && pass || fail": pass always succeeds;
# the offsite_proxy_* functions take optional arguments
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=servers.sh
source "$here/servers.sh"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
ok_sep="- "
passes=0
pass() {
  echo "ok   $ok_sep$*"
  passes=$((passes + 1))
}

if ((EUID != 0)); then
  echo "SKIP: servers_selftest.sh needs root (sshd, mount, useradd)"
  exit 77
fi
for tool in ceph-mon ceph-osd radosgw radosgw-admin s3cmd rclone /usr/sbin/sshd sftp faketime curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool is not installed (apt-get install ceph-mon ceph-osd radosgw s3cmd rclone openssh-server faketime curl)"
    exit 77
  fi
done

t_start=$SECONDS
work=$(mktemp -d /tmp/mv-offsite-selftest.XXXXXX) || exit 1
trap 'offsite_cleanup_all; keep_or_remove_work "work directory kept: $work" KEEP' EXIT
declare -A timing=()
now_ms() { echo $(($(date +%s%N) / 1000000)); }
timed() {
  local name=$1 t0 rc
  shift
  t0=$(now_ms)
  "$@"
  rc=$?
  timing[$name]=$(($(now_ms) - t0))
  return $rc
}
# curl's exit code, the milliseconds it took and the time it ended: "RC MS END_MS"
curl_rc_time() {
  local t0 rc
  t0=$(now_ms)
  curl -s -o /dev/null "$@"
  rc=$?
  echo "$rc $(($(now_ms) - t0)) $(now_ms)"
}

# ---------------------------------------------------------------------------------------------
echo "# 1. S3 (Ceph RGW)"
if ! timed rgw_start offsite_start_rgw "$work/s3"; then
  fail "offsite_start_rgw"
  exit 1
fi
pass "offsite_start_rgw in ${timing[rgw_start]} ms, daemons use $(offsite_rgw_rss_mb) MB resident"
[[ $MV_S3_ENDPOINT == "http://127.0.0.1:$MV_S3_PORT" && -n $MV_S3_ACCESS && -n $MV_S3_SECRET ]] &&
  pass "MV_S3_* exported ($MV_S3_ENDPOINT)" || fail "MV_S3_* not exported properly"
[[ $(cat "$work/s3/s3.cred") == "$MV_S3_ACCESS $MV_S3_SECRET" && $(stat -c %a "$work/s3/s3.cred") == 600 &&
  $(wc -l <"$work/s3/s3.cred") == 1 ]] && pass "s3.cred: one line 'ACCESS SECRET', mode 0600" || fail "s3.cred wrong"
health=$(timeout 30 ceph -c "$work/s3/ceph/ceph.conf" health 2>&1)
[[ $health == HEALTH_OK ]] && pass "cluster health: HEALTH_OK" || fail "cluster health: $health"

offsite_s3cmd mb s3://selftest >/dev/null && pass "s3cmd mb" || fail "s3cmd mb"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary x "$MV_S3_ENDPOINT/selftest/anon")
[[ $code == 403 ]] && pass "anonymous PUT refused (403)" || fail "anonymous PUT answered $code"
MV_S3_SECRET=wrong offsite_s3req raw GET /selftest >/dev/null 2>&1 &&
  fail "a wrong secret was accepted" || pass "a wrong secret is refused"
# a SigV4 request that does not sign x-amz-content-sha256 (RGW wants it, as AWS does)
code=$(/usr/bin/python3 - <<'PY'
import datetime, hashlib, hmac, http.client, os, urllib.parse
ep = urllib.parse.urlsplit(os.environ["MV_S3_ENDPOINT"])
now = datetime.datetime.now(datetime.timezone.utc)
amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
creq = "\n".join(["GET", "/selftest", "", "host:%s\nx-amz-date:%s\n" % (ep.netloc, amz),
                  "host;x-amz-date", hashlib.sha256(b"").hexdigest()])
scope = day + "/us-east-1/s3/aws4_request"
sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
k = ("AWS4" + os.environ["MV_S3_SECRET"]).encode()
for p in (day, "us-east-1", "s3", "aws4_request"):
    k = hmac.new(k, p.encode(), hashlib.sha256).digest()
auth = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=host;x-amz-date, Signature=%s" % (
    os.environ["MV_S3_ACCESS"], scope, hmac.new(k, sts.encode(), hashlib.sha256).hexdigest())
c = http.client.HTTPConnection(ep.hostname, ep.port, timeout=10)
c.request("GET", "/selftest", headers={"host": ep.netloc, "x-amz-date": amz, "authorization": auth})
print(c.getresponse().status)
PY
)
[[ $code == 403 ]] && pass "SigV4 without x-amz-content-sha256 refused (403)" || fail "SigV4 without x-amz-content-sha256: $code"

head -c $((12 << 20)) /dev/urandom >"$work/big" && head -c 3000 /dev/urandom >"$work/small"
offsite_s3cmd put --multipart-chunk-size-mb=5 "$work/big" s3://selftest/packs/big >/dev/null 2>&1 &&
  offsite_s3cmd put "$work/small" s3://selftest/manifests/small >/dev/null 2>&1 &&
  pass "s3cmd put (12 MB as a 3-part multipart upload, and 3000 bytes)" || fail "s3cmd put"
listing=$(offsite_s3cmd ls -r s3://selftest | awk '{ print $3, $4 }' | sort)
[[ $listing == "$((12 << 20)) s3://selftest/packs/big"$'\n'"3000 s3://selftest/manifests/small" ]] &&
  pass "s3cmd ls lists both with their sizes" || fail "s3cmd ls: $listing"
offsite_s3cmd get --force s3://selftest/packs/big "$work/big.back" >/dev/null 2>&1 && cmp -s "$work/big" "$work/big.back" &&
  pass "s3cmd get returns the same bytes" || fail "s3cmd get"
offsite_s3cmd del s3://selftest/manifests/small >/dev/null 2>&1 &&
  [[ -z $(offsite_s3cmd ls -r s3://selftest/manifests/) ]] && pass "s3cmd del" || fail "s3cmd del"

(
  offsite_rclone_env || exit 1
  rclone copyto "$work/small" MVS3:selftest/rclone/small 2>&1 &&
    [[ $(rclone lsf MVS3:selftest/rclone 2>&1) == small ]] &&
    cmp -s <(rclone cat MVS3:selftest/rclone/small 2>/dev/null) "$work/small" &&
    rclone deletefile MVS3:selftest/rclone/small 2>&1 &&
    [[ -z $(rclone lsf MVS3:selftest/rclone 2>&1) ]]
) >"$work/rclone.out" 2>&1 && pass "rclone with the environment-only remote MVS3: copy, list, cat, delete" ||
  { fail "rclone with the MVS3 remote"; sed 's/^/  | /' "$work/rclone.out"; }

offsite_s3cmd mb s3://versioned >/dev/null && offsite_rgw_versioning versioned &&
  [[ $(offsite_s3req versioning versioned) == Enabled ]] && pass "offsite_rgw_versioning: Enabled" ||
  fail "offsite_rgw_versioning"
offsite_s3cmd put "$work/small" s3://versioned/obj >/dev/null 2>&1
offsite_s3cmd put "$work/small" s3://versioned/obj >/dev/null 2>&1
offsite_s3cmd del s3://versioned/obj >/dev/null 2>&1
kinds=$(offsite_rgw_versions versioned | awk '{ print $1, $2 }' | sort | tr '\n' ',')
[[ $kinds == "deletemarker obj,version obj,version obj," ]] &&
  pass "offsite_rgw_versions: two versions and a delete marker after put, put, delete" ||
  fail "offsite_rgw_versions: $kinds"
while read -r _ key vid _; do
  offsite_s3req raw DELETE "/versioned/$key" "versionId=$vid" >/dev/null 2>&1 || fail "DELETE version $vid"
done < <(offsite_rgw_versions versioned)
[[ -z $(offsite_rgw_versions versioned) ]] && pass "every version deleted: offsite_rgw_versions prints nothing" ||
  fail "versions left after deleting each"

echo "# the RGW daemons use $(offsite_rgw_rss_mb) MB resident after these tests"
pid=$(cat "$work/s3/ceph/pids/rgw.pid")
timed rgw_kill offsite_kill_rgw && ! offsite__alive "$pid" && ! offsite__listening "$MV_S3_PORT" &&
  pass "offsite_kill_rgw: radosgw gone, port closed" || fail "offsite_kill_rgw"
code=$(curl -s -o /dev/null -w '%{http_code}' "$MV_S3_ENDPOINT/")
[[ $code == 000 ]] && pass "a request while radosgw is dead fails to connect" || fail "request answered $code with radosgw dead"
timed rgw_restart offsite_restart_rgw && offsite_s3req raw HEAD /selftest/packs/big >/dev/null 2>&1 &&
  pass "offsite_restart_rgw in ${timing[rgw_restart]} ms, same port, objects still there" || fail "offsite_restart_rgw"

skew=$(offsite_skewed_prefix)
read -r -a skew_cmd <<<"$skew"
d_real=$(date +%s) d_skew=$("${skew_cmd[@]}" date +%s)
((d_skew - d_real >= 899 && d_skew - d_real <= 902)) && pass "'$skew date' runs 15 minutes ahead" ||
  fail "'$skew date': $((d_skew - d_real)) s ahead"
read -r -a skew20 <<<"$(offsite_skewed_prefix +20m)"
out=$("${skew20[@]}" /usr/bin/python3 "$here/s3req.py" raw GET / 2>&1)
out2=$("${skew20[@]}" s3cmd -c "$work/s3/s3cfg" ls 2>&1)
[[ $out == *"HTTP 403"* && $out == *RequestTimeTooSkewed* && $out2 == *RequestTimeTooSkewed* ]] &&
  pass "20 minutes ahead (faketime): RGW refuses s3req.py and s3cmd with RequestTimeTooSkewed" ||
  fail "skewed requests: $out / $out2"
# (information only: RGW's grace is 15 minutes, so exactly +15m is still accepted)
"${skew_cmd[@]}" /usr/bin/python3 "$here/s3req.py" raw GET / >/dev/null 2>&1 &&
  echo "# note: 15 minutes ahead, RGW still accepts requests" ||
  echo "# note: 15 minutes ahead, RGW already refuses requests"
"${skew_cmd[@]}" curl -sf -o /dev/null "$MV_S3_ENDPOINT/" && pass "curl (OpenSSL, libcurl) runs under faketime" ||
  fail "curl under faketime"

# ---------------------------------------------------------------------------------------------
echo "# 2. SFTP (OpenSSH sshd)"
if ! timed sshd_start offsite_start_sshd "$work/sftp"; then
  fail "offsite_start_sshd"
  exit 1
fi
pass "offsite_start_sshd in ${timing[sshd_start]} ms ($MV_SFTP_URL)"
[[ $MV_SFTP_URL == "sftp://$MV_SFTP_USER@127.0.0.1:$MV_SFTP_PORT$MV_SFTP_DIR" && $MV_SFTP_DIR == /* &&
  -d $MV_SFTP_DIR && -r $MV_SFTP_IDENTITY ]] && pass "MV_SFTP_* exported" || fail "MV_SFTP_* wrong"
[[ $(cat "$MV_SFTP_KNOWN_HOSTS") =~ ^\[127\.0\.0\.1\]:$MV_SFTP_PORT\ ssh-ed25519\ AAAA[A-Za-z0-9+/=]+$ ]] &&
  pass "known_hosts: [127.0.0.1]:PORT ssh-ed25519 AAAA..." || fail "known_hosts: $(cat "$MV_SFTP_KNOWN_HOSTS")"
offsite_sftp -b - >"$work/sftp.out" 2>&1 <<EOF && pass "sftp put, rename, get, ls, rm" || { fail "sftp session"; sed 's/^/  | /' "$work/sftp.out"; }
mkdir $MV_SFTP_DIR/packs
put $work/small $MV_SFTP_DIR/packs/small.tmp
rename $MV_SFTP_DIR/packs/small.tmp $MV_SFTP_DIR/packs/small
get $MV_SFTP_DIR/packs/small $work/small.back
ls -l $MV_SFTP_DIR/packs
put $work/small $MV_SFTP_DIR/gone
rm $MV_SFTP_DIR/gone
EOF
cmp -s "$work/small" "$work/small.back" && [[ ! -e $MV_SFTP_DIR/gone && -f $MV_SFTP_DIR/packs/small ]] &&
  [[ $(stat -c %U "$MV_SFTP_DIR/packs/small") == "$MV_SFTP_USER" ]] &&
  pass "files land in MV_SFTP_DIR, owned by $MV_SFTP_USER" || fail "files on the SFTP side"
sed 's/AAAA./AAAAX/' "$MV_SFTP_KNOWN_HOSTS" >"$work/bad_known_hosts"
MV_SFTP_KNOWN_HOSTS=$work/bad_known_hosts offsite_sftp -b - <<<"pwd" >/dev/null 2>&1 &&
  fail "a wrong pinned host key was accepted" || pass "a wrong pinned host key is refused"

timed sshd_kill offsite_kill_sshd && ! offsite__listening "$MV_SFTP_PORT" &&
  ! offsite_sftp -b - <<<"pwd" >/dev/null 2>&1 && pass "offsite_kill_sshd: port closed, logins fail" ||
  fail "offsite_kill_sshd"
timed sshd_restart offsite_restart_sshd && offsite_sftp -b - <<<"ls $MV_SFTP_DIR/packs" >/dev/null 2>&1 &&
  pass "offsite_restart_sshd in ${timing[sshd_restart]} ms, same port and keys" || fail "offsite_restart_sshd"

if offsite_sftp_small_disk 2m; then
  pass "offsite_sftp_small_disk 2m ($(findmnt -n -o FSTYPE "$MV_SFTP_DIR") on MV_SFTP_DIR)"
  head -c $((1 << 20)) /dev/urandom >"$work/1m" && head -c $((3 << 20)) /dev/urandom >"$work/3m"
  offsite_sftp -b - <<<"put $work/1m $MV_SFTP_DIR/1m" >/dev/null 2>&1 &&
    pass "1 MB fits on the 2 MB disk" || fail "1 MB did not fit"
  offsite_sftp -b - <<<"put $work/3m $MV_SFTP_DIR/3m" >"$work/full.out" 2>&1 &&
    fail "3 MB fit on a 2 MB disk" || pass "3 MB on the 2 MB disk fails ($(grep -o 'Failure\|No space[^"]*' "$work/full.out" | head -n1))"
  offsite_sftp_unmount && ! mountpoint -q "$MV_SFTP_DIR" && [[ -f $MV_SFTP_DIR/packs/small ]] &&
    pass "offsite_sftp_unmount: the former content is back" || fail "offsite_sftp_unmount"
else
  fail "offsite_sftp_small_disk 2m"
fi

# ---------------------------------------------------------------------------------------------
echo "# 3. Proxy"
offsite_s3cmd put --acl-public "$work/big" s3://selftest/public/big >/dev/null 2>&1 ||
  fail "public object for the proxy tests"
timed proxy_start offsite_start_proxy S3P "$MV_S3_PORT" && pass "offsite_start_proxy: 127.0.0.1:$S3P -> $MV_S3_PORT" ||
  fail "offsite_start_proxy"
url=http://127.0.0.1:${S3P:-0}/selftest/public/big
curl -sf -o "$work/via-proxy" "$url" && cmp -s "$work/big" "$work/via-proxy" &&
  pass "12 MB GET through the proxy, unchanged" || fail "GET through the proxy"
# signed requests pass too: the Host header (127.0.0.1:PROXY) is signed and forwarded as is
MV_S3_ENDPOINT=http://127.0.0.1:${S3P:-0} offsite_s3req raw GET /selftest "prefix=packs/" >/dev/null 2>&1 &&
  pass "a signed request through the proxy" || fail "a signed request through the proxy"

rate=$((256 << 10))
offsite_proxy_throttle "$rate" && pass "offsite_proxy_throttle $rate" || fail "offsite_proxy_throttle"
# 1 MiB at 256 KiB/s: 4 s; allow the kernel's buffers to have taken some in advance
read -r secs speed < <(curl -s -r 0-1048575 -o /dev/null -w '%{time_total} %{speed_download}\n' "$url")
awk -v s="$secs" 'BEGIN { exit !(s >= 3.2 && s <= 6) }' &&
  pass "download throttled: 1 MiB in $secs s ($((${speed%.*} / 1024)) KiB/s, cap 256 KiB/s)" ||
  fail "download at 256 KiB/s took $secs s"
t0=$(now_ms)
MV_S3_ENDPOINT=http://127.0.0.1:${S3P:-0} offsite_s3req raw PUT /selftest/up-throttled "" <(head -c $((1 << 20)) "$work/big") >/dev/null 2>&1 ||
  fail "PUT through the throttled proxy"
ms=$(($(now_ms) - t0))
((ms >= 3200 && ms <= 6000)) && pass "upload throttled: 1 MiB in $ms ms" || fail "upload at 256 KiB/s took $ms ms"
offsite_proxy_restore
read -r secs < <(curl -s -o /dev/null -w '%{time_total}\n' "$url")
awk -v s="$secs" 'BEGIN { exit !(s < 2) }' && pass "throttle lifted: 12 MB in $secs s" || fail "after restore: 12 MB took $secs s"

# drop reset: a transfer in flight breaks at once, new connections are refused
offsite_proxy_throttle $((512 << 10))
curl_rc_time "$url" >"$work/inflight" &
cpid=$!
sleep 1
t_drop=$(now_ms)
timed drop offsite_proxy_drop reset || fail "offsite_proxy_drop reset"
wait "$cpid"
read -r rc _ end <"$work/inflight"
[[ $rc == 18 || $rc == 56 ]] && ((end - t_drop <= 1000)) &&
  pass "drop reset: the transfer in flight fails at once (curl exit $rc, $((end - t_drop)) ms after the drop)" ||
  fail "drop reset: transfer in flight ended with curl exit $rc, $((end - t_drop)) ms after the drop"
read -r rc _ < <(curl_rc_time --max-time 5 "$url")
[[ $rc == 7 ]] && pass "drop reset: new connections refused (curl exit 7)" || fail "drop reset: new connection: curl exit $rc"
offsite_proxy_restore && curl -sf -o /dev/null "$url" && pass "offsite_proxy_restore: requests work again" ||
  fail "offsite_proxy_restore after reset"

# drop blackhole: nothing moves and nothing closes; only the client's timeout ends it
offsite_proxy_throttle $((512 << 10))
curl_rc_time --speed-limit 1 --speed-time 2 "$url" >"$work/inflight" &
cpid=$!
sleep 1
offsite_proxy_drop blackhole || fail "offsite_proxy_drop blackhole"
wait "$cpid"
read -r rc _ <"$work/inflight"
[[ $rc == 28 ]] && pass "blackhole: the transfer in flight stalls until the client's timeout (curl exit 28)" ||
  fail "blackhole: transfer in flight: curl exit $rc"
read -r rc ms _ < <(curl_rc_time --max-time 2 "$url")
[[ $rc == 28 ]] && pass "blackhole: a new request hangs (curl exit 28 after $ms ms)" || fail "blackhole: new request: curl exit $rc"
offsite_proxy_restore && curl -sf -o /dev/null --max-time 10 "$url" && pass "restore after blackhole: requests work again" ||
  fail "offsite_proxy_restore after blackhole"
stats=$(offsite_proxy_stats) && [[ $stats == *"mode=pass rate=0"* ]] && pass "offsite_proxy_stats: $stats" ||
  fail "offsite_proxy_stats: $stats"

# sshd behind its own proxy: the known_hosts file got a line for the proxy's port
offsite_start_proxy SSHP "$MV_SFTP_PORT" || fail "offsite_start_proxy for sshd"
MV_SFTP_PORT=${SSHP:-0} offsite_sftp -b - <<<"get $MV_SFTP_DIR/packs/small $work/small.proxy" >/dev/null 2>&1 &&
  cmp -s "$work/small" "$work/small.proxy" && pass "sftp through the proxy (host key pinned for its port too)" ||
  fail "sftp through the proxy"
offsite_proxy_throttle $((128 << 10)) "${SSHP:-0}"
t0=$(now_ms)
MV_SFTP_PORT=${SSHP:-0} offsite_sftp -b - <<<"put $work/1m $MV_SFTP_DIR/1m" >/dev/null 2>&1 || fail "sftp put via the throttled proxy"
ms=$(($(now_ms) - t0))
((ms >= 6500 && ms <= 12000)) && pass "sftp upload throttled: 1 MiB at 128 KiB/s in $ms ms" ||
  fail "sftp upload at 128 KiB/s took $ms ms"
offsite_stop_proxy "${SSHP:-0}" && offsite_stop_proxy "${S3P:-0}" && ! offsite__listening "${S3P:-0}" &&
  pass "offsite_stop_proxy" || fail "offsite_stop_proxy"

# ---------------------------------------------------------------------------------------------
echo "# 4. Clean-up"
# A test shell killed with -9 (a ctest timeout): its watchdog must clean up after it.
cat >"$work/victim.sh" <<EOF
source "$here/servers.sh"
offsite_start_sshd "$work/victim" >/dev/null 2>&1 || exit 1
offsite_sftp_small_disk 1m || exit 1
offsite_start_proxy VP "\$MV_SFTP_PORT" || exit 1
pd=\${OFFSITE_PROXIES[\$VP]}
echo ready \$(cat "$work/victim/sshd/pids/sshd.pid" "$work/victim/sshd/watchdog.pid" "\$pd/pids/proxy.pid" "\$pd/watchdog.pid")
exec sleep 600
EOF
bash "$work/victim.sh" >"$work/victim.out" 2>&1 &
vpid=$!
for ((i = 0; i < 100; i++)); do
  grep -q ready "$work/victim.out" && break
  sleep 0.1
done
vprocs=$(sed -n 's/^ready //p' "$work/victim.out") # sshd, its watchdog, the proxy, its watchdog
kill -KILL "$vpid"
wait "$vpid" 2>/dev/null
t0=$(now_ms)
for ((i = 0; i < 50; i++)); do
  left=0
  for p in $vprocs; do offsite__alive "$p" && left=1; done
  ((left)) || mountpoint -q "$work/victim/remote" || break
  sleep 0.1
done
((left == 0)) && ! mountpoint -q "$work/victim/remote" && [[ $vprocs =~ ^[0-9]+\ [0-9]+\ [0-9]+\ [0-9]+$ ]] &&
  pass "a kill -9'd test shell: its watchdog killed sshd and the proxy and unmounted in $(($(now_ms) - t0)) ms" ||
  fail "watchdog: processes ($vprocs) or the mount outlived the killed test shell"

timed cleanup offsite_cleanup_all
leftover=$(ps -e -o pid=,stat=,args= | awk '$2 !~ /^Z/' | grep -F "$work" | grep -v grep)
[[ -z $leftover ]] && pass "offsite_cleanup_all in ${timing[cleanup]} ms: no server process left" ||
  fail "processes left: $leftover"
for p in "$MV_S3_PORT" "$MV_SFTP_PORT"; do
  offsite__listening "$p" && fail "port $p still listening after clean-up"
done
[[ -z $(findmnt -n -l -o TARGET | grep -F "$work") ]] && pass "nothing mounted under the work directory" ||
  fail "mounts left under $work"

echo "# timings (ms)"
for k in "${!timing[@]}"; do printf '    %-14s %6d\n' "$k" "${timing[$k]}"; done | sort
echo "# total: $((SECONDS - t_start)) s"
echo "offsite_selftest: $passes passed, $failures failed"
((failures == 0))
