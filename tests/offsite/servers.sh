# shellcheck shell=bash
# shellcheck disable=SC2015  # "step && step || { report; return 1; }": the error branch is meant to run when any step fails
# Real offsite targets for the replication tests, each private to one test and bound to
# 127.0.0.1 only: a one-node Ceph cluster with its S3 gateway (RGW), a private OpenSSH sshd
# serving SFTP, a fault-injecting TCP proxy to put in front of either, a small filesystem to
# fill up on the SFTP side, and a skewed clock. Source this file (it defines functions and a
# few defaults only; nothing runs at source time). It works under `set -euo pipefail`: every
# function checks its own steps, prints "servers.sh: ..." to stderr (with the tail of the
# relevant log) and returns non-zero on failure. Needs root (mount, useradd, sshd).
#
# Call the start functions from the test's main shell, not inside $(...): they record what
# they started in shell variables that the stop/kill/restart functions and
# offsite_cleanup_all read. Typical use:
#   here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   source "$here/servers.sh"            (from tests/offsite/; adjust the path elsewhere)
#   work=$(mktemp -d /tmp/mv-offsite.XXXXXX)
#   trap 'offsite_cleanup_all; rm -rf "$work"' EXIT
#   offsite_start_rgw "$work/s3"; offsite_start_sshd "$work/sftp"
#
# S3 (Ceph RGW, Pacific):
#   offsite_start_rgw DIR      one-node cluster (ceph-mon, one ceph-osd on a sparse-file
#                              BlueStore, radosgw) entirely under DIR/ceph, cephx off, pools of
#                              size 1; creates an S3 user and exports
#                                MV_S3_ENDPOINT  http://127.0.0.1:PORT
#                                MV_S3_PORT      PORT
#                                MV_S3_ACCESS    access key id      MV_S3_SECRET  secret key
#                              writes DIR/s3.cred ("ACCESS SECRET", one line, mode 0600) and
#                              DIR/s3cfg (for s3cmd -c); returns once a signed S3 request
#                              succeeds. Takes ~6-7 s; the daemons use ~135 MB resident
#                              at start, ~165 MB after some traffic.
#   offsite_stop_rgw           stops radosgw (TERM, KILL after 3 s), kill -9s the OSD and the
#                              mon (the cluster is not meant to be started again); leaves no
#                              process behind. DIR stays (its block file is sparse).
#   offsite_kill_rgw           kill -9 radosgw only (the server dies mid-upload); the cluster
#                              stays up. Returns once the process is gone.
#   offsite_restart_rgw        starts radosgw again on the same port; returns once it answers.
#   offsite_rgw_versioning BUCKET [Enabled|Suspended]   sets versioning (default Enabled).
#   offsite_rgw_versions BUCKET [PREFIX]   prints every version and delete marker left:
#                              "version KEY VERSION_ID SIZE" / "deletemarker KEY VERSION_ID";
#                              empty output = nothing of the object survives in any form.
#   offsite_s3req ARGS...      tests/offsite/s3req.py (stdlib SigV4 client): raw requests,
#                              versioning, versions, purge; see that file.
#   offsite_s3cmd ARGS...      s3cmd with this gateway's config (path-style, SigV4, no TLS).
#   offsite_rclone_env         exports an environment-only rclone remote MVS3 for the gateway
#                              (RCLONE_CONFIG_MVS3_*; RCLONE_CONFIG=an empty file) and unsets
#                              AWS_CA_BUNDLE, which this machine's environment sets and which
#                              makes rclone's S3 backend fail ("LoadCustomCABundleError").
#   offsite_rgw_rss_mb         prints the resident memory of the three daemons, in MB.
#
# SFTP (OpenSSH sshd, internal-sftp):
#   offsite_start_sshd DIR     sshd on 127.0.0.1:PORT with its own ed25519 host key, key-only
#                              login for the unprivileged user $OFFSITE_SFTP_USER (mvsftp,
#                              created if missing; set OFFSITE_SFTP_USER=root to log in as
#                              root instead); makes DIR/id_ed25519 (+.pub) for the client,
#                              DIR/known_hosts ("[127.0.0.1]:PORT ssh-ed25519 AAAA...") and the
#                              remote directory DIR/remote (owned by the user); exports
#                                MV_SFTP_PORT MV_SFTP_USER MV_SFTP_IDENTITY MV_SFTP_KNOWN_HOSTS
#                                MV_SFTP_DIR (DIR/remote, absolute)
#                                MV_SFTP_URL  sftp://USER@127.0.0.1:PORT/ABSOLUTE/DIR/remote
#                              Returns once an sftp login succeeded (~0.5 s).
#   offsite_stop_sshd          stops sshd and its sessions, unmounts a small disk.
#   offsite_kill_sshd          kill -9 sshd and every session process under it (open
#                              connections drop at once, as when the server dies).
#   offsite_restart_sshd       starts sshd again on the same port with the same keys.
#   offsite_sftp ARGS...       sftp(1) with the identity, pinned known_hosts and port, batch
#                              mode; e.g. `offsite_sftp -b - <<<"put f $MV_SFTP_DIR/f"`.
#   offsite_known_hosts_line PORT   prints the known_hosts line of this sshd's key for PORT.
#   offsite_sftp_small_disk SIZE    mounts a SIZE (e.g. 2m) tmpfs on MV_SFTP_DIR (hiding what
#                              was there; a loop-mounted ext4 image when tmpfs is refused), so
#                              uploads fail with "no space" (SSH_FX_FAILURE) once it is full.
#   offsite_sftp_unmount       unmounts it again; the former content reappears.
#
# Faults:
#   offsite_start_proxy VAR TARGET_PORT   TCP proxy 127.0.0.1:P -> 127.0.0.1:TARGET_PORT
#                              (tests/offsite/proxy.py); sets the variable named VAR to P.
#                              When TARGET_PORT is the sshd's, the known_hosts file also gets
#                              a line for [127.0.0.1]:P, so host key checks pass via the proxy.
#   offsite_proxy_drop [reset|blackhole] [P]   the link drops: "reset" (default) resets every
#                              open connection and refuses new ones; "blackhole" forwards
#                              nothing more and closes nothing (connections hang until the
#                              client's own timeout). Returns once in effect.
#   offsite_proxy_restore [P]  the link is back: new connections work; those open (or
#                              queued) during the drop are reset. Also lifts a throttle.
#   offsite_proxy_throttle BYTES_PER_SEC [P]   caps each direction to BYTES_PER_SEC (shared by
#                              all connections through the proxy, like a slow line); 0 lifts it.
#                              It also ends a drop (as offsite_proxy_restore does).
#   offsite_proxy_stats [P]    prints "seq=.. mode=.. rate=.. open=N accepted=N up=B down=B".
#   offsite_stop_proxy [P]     stops it. P defaults to the last proxy started.
#   offsite_skewed_prefix [OFFSET]   prints the command prefix that runs a program with its
#                              clock OFFSET (default +15m) ahead: faketime (libfaketime).
#                              RGW tolerates 15 minutes of skew (here +15m30s still passed,
#                              +16m was refused), so to provoke RequestTimeTooSkewed use +20m.
#
# Clean-up: offsite_cleanup_all stops everything this shell started (proxies, sshd and its
# mount, RGW); it never fails, so it suits an EXIT trap. If the test shell dies without it
# (ctest kills a test on timeout), a watchdog started with each server kill -9s the daemons
# and unmounts the small disk within a second or two.
#
# Ports come from offsite_free_port, which shares tests/capture/servers.sh's registry of
# handed-out ports (MV_PORT_REGISTRY, default /tmp/mailvault-test-ports), so tests running
# in parallel (ctest -j) never get the same port. The OSD binds ports of its own from Ceph's
# range 6800-7300 (it skips busy ones), outside the registry's 20000-32767.

offsite__here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OFFSITE_SFTP_USER=${OFFSITE_SFTP_USER:-mvsftp}
# size of the OSD's sparse block file: the cluster reports this as its capacity
OFFSITE_RGW_OSD_BYTES=${OFFSITE_RGW_OSD_BYTES:-$((8 << 30))}

offsite__err() { echo "servers.sh: $*" >&2; }

# The system python3 when there is one: the pyenv shim in PATH costs ~50 ms a call.
offsite__py() {
  if [[ -x /usr/bin/python3 ]]; then /usr/bin/python3 "$@"; else python3 "$@"; fi
}

# Last lines of a log file, indented, to stderr.
offsite__tail_log() {
  local f=$1 n=${2:-20}
  if [[ -s $f ]]; then
    echo "---- last $n lines of $f ----" >&2
    tail -n "$n" "$f" | sed 's/^/  | /' >&2
    echo "----" >&2
  else
    echo "(log $f is missing or empty)" >&2
  fi
}

# Absolute path of a directory, created if needed.
offsite__absdir() {
  [[ -n ${1:-} ]] || { offsite__err "missing directory argument"; return 1; }
  mkdir -p -- "$1" || { offsite__err "cannot create $1"; return 1; }
  (cd -- "$1" && pwd -P)
}

# ---- processes ----

# offsite__spawn PIDFILE LOG CMD...: starts CMD detached (own session, no inherited file
# descriptors, output appended to LOG) and writes its pid to PIDFILE; see proc.py.
offsite__spawn() {
  offsite__py "$offsite__here/proc.py" spawn "$@"
}

# True while process PID runs. A zombie counts as gone: the daemons are orphans of PID 1,
# which on this VM reaps them late.
offsite__alive() {
  local pid=${1:-} stat
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

offsite__pid_of() { [[ -r $1 ]] && cat -- "$1" 2>/dev/null; }

# offsite__wait_gone SECONDS PID...: true once none of the PIDs is alive.
offsite__wait_gone() {
  local secs=$1 deadline p alive
  shift
  deadline=$((SECONDS + secs))
  while :; do
    alive=0
    for p; do offsite__alive "$p" && alive=1; done
    ((alive)) || return 0
    ((SECONDS >= deadline)) && return 1
    sleep 0.05
  done
}

# offsite__stop_pids GRACE PID...: SIGTERM, then SIGKILL what is left after GRACE seconds;
# true once all are gone.
offsite__stop_pids() {
  local grace=$1 p
  shift
  for p; do offsite__alive "$p" && { kill -TERM "$p" 2>/dev/null || true; }; done
  offsite__wait_gone "$grace" "$@" && return 0
  for p; do offsite__alive "$p" && { kill -KILL "$p" 2>/dev/null || true; }; done
  offsite__wait_gone 5 "$@"
}

# Pids of PID and all its descendants, parents first (collected before anything is killed:
# the children of a killed process are re-parented and no longer found).
offsite__tree() {
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END {
      n = split(root, queue, " ")
      for (i = 1; i <= n; i++) {
        print queue[i]
        m = split(kids[queue[i]], k, " ")
        for (j = 1; j <= m; j++) queue[++n] = k[j]
      }
    }'
}

# offsite__start_watchdog STATEDIR: a watchdog that kills the pids in STATEDIR/pids/ when
# this shell ($$, the test script even inside a subshell) dies without stopping them.
offsite__start_watchdog() {
  offsite__spawn "$1/watchdog.pid" "$1/watchdog.log" \
    "$(command -v /usr/bin/python3 || command -v python3)" "$offsite__here/proc.py" watchdog "$$" "$1"
}

# offsite__end_watchdog STATEDIR: normal stop; the watchdog also exits on its own once
# STATEDIR/pids is gone.
offsite__end_watchdog() {
  local pid
  rm -rf -- "$1/pids"
  pid=$(offsite__pid_of "$1/watchdog.pid") || return 0
  offsite__alive "$pid" && { kill -TERM "$pid" 2>/dev/null || true; }
  rm -f -- "$1/watchdog.pid"
  return 0
}

# ---- ports ----

# True when PORT appears in /proc/net/tcp{,6} in any state (listening, connected, TIME_WAIT).
offsite__port_in_use() {
  local hex
  printf -v hex '%04X' "$1"
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v p=":$hex" '(substr($2, length($2) - 4) == p || substr($3, length($3) - 4) == p) { f = 1 }
      END { exit !f }'
}

# True when something listens on 127.0.0.1:PORT (or the wildcard). Reads /proc/net/tcp, so
# it opens no connection (which would leave noise in the servers' logs).
offsite__listening() {
  local hex
  printf -v hex '%04X' "$1"
  awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p {
      a = substr($2, 1, length($2) - 5); if (a == "0100007F" || a == "00000000") f = 1 }
    END { exit !f }' /proc/net/tcp
}

# offsite_free_port: prints a TCP port with no socket on it, from 20000-32767 (below Linux's
# ephemeral range, so outgoing connections do not take it meanwhile). Each port handed out
# is noted for 5 minutes as a directory in $MV_PORT_REGISTRY, the registry
# tests/capture/servers.sh's free_port uses too, so parallel tests do not collide.
offsite_free_port() {
  local i port reg=${MV_PORT_REGISTRY:-/tmp/mailvault-test-ports}
  mkdir -p "$reg" 2>/dev/null && { chmod 1777 "$reg" 2>/dev/null || true; }
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + (RANDOM % 12768)))
    offsite__port_in_use "$port" && continue
    if ! mkdir "$reg/$port" 2>/dev/null; then
      # handed out before: reusable once the note is older than 5 minutes
      [[ -n $(find "$reg/$port" -maxdepth 0 -mmin +5 2>/dev/null) ]] || continue
      touch "$reg/$port" 2>/dev/null || continue
    fi
    echo "$port"
    return 0
  done
  offsite__err "found no free port in 200 tries"
  return 1
}

# offsite__wait_listen PORT SECONDS [PID]: waits until 127.0.0.1:PORT listens; fails early
# when PID (the server) died.
offsite__wait_listen() {
  local port=$1 deadline=$((SECONDS + $2)) pid=${3:-}
  until offsite__listening "$port"; do
    if [[ -n $pid ]] && ! offsite__alive "$pid"; then
      offsite__err "the server (pid $pid) exited before listening on port $port"
      return 1
    fi
    ((SECONDS < deadline)) || { offsite__err "nothing listens on 127.0.0.1:$port"; return 1; }
    sleep 0.05
  done
}

# =============================================================================================
# S3: Ceph RGW
# =============================================================================================
# Layout of DIR: ceph/ceph.conf, ceph/{mon,osd,rgw,log,crash}/, ceph/pids/*.pid (ours, not
# Ceph's), ceph/run/ (admin sockets; a short directory under /tmp instead when DIR is too
# deep for a unix socket path), s3.cred, s3cfg, rclone.conf.
OFFSITE_RGW_DIR=${OFFSITE_RGW_DIR:-}

# ceph CLI against the private cluster; never waits long for a missing mon.
offsite__ceph() {
  timeout 60 ceph -c "$OFFSITE_RGW_DIR/ceph/ceph.conf" --connect-timeout 30 "$@"
}

offsite__rgw_fail() {
  local c=$OFFSITE_RGW_DIR/ceph f
  offsite__err "$*"
  for f in "$c"/log/*.out "$c/log/client.rgw.log"; do [[ -e $f ]] && offsite__tail_log "$f" 15; done
  return 1
}

offsite_start_rgw() {
  local dir c run fsid osd_uuid mon_port rgw_port access secret mkfs_pid t0=$SECONDS b
  [[ -z $OFFSITE_RGW_DIR ]] || { offsite__err "an RGW from $OFFSITE_RGW_DIR is running"; return 1; }
  for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph curl s3cmd uuidgen; do
    command -v "$b" >/dev/null || { offsite__err "$b is missing (apt-get install ceph-mon ceph-osd radosgw s3cmd)"; return 1; }
  done
  dir=$(offsite__absdir "${1:-}") || return 1
  c=$dir/ceph
  rm -rf -- "$c" && mkdir -p "$c"/{mon,osd,rgw,log,crash,pids} || { offsite__err "cannot prepare $c"; return 1; }
  # Unix socket paths are limited to 108 bytes ("client.rgw.asok" and the like follow).
  run=$c/run
  if ((${#run} > 70)); then
    run=$(mktemp -d /tmp/mv-ceph-run.XXXXXX) || return 1
    echo "$run" >>"$c/rmdirs"
  fi
  mkdir -p "$run"
  OFFSITE_RGW_DIR=$dir
  offsite__start_watchdog "$c" || { OFFSITE_RGW_DIR=""; return 1; }

  mon_port=$(offsite_free_port) && rgw_port=$(offsite_free_port) || { offsite_stop_rgw; return 1; }
  echo "$rgw_port" >"$c/rgw_port"
  fsid=$(uuidgen) && osd_uuid=$(uuidgen) || { offsite_stop_rgw; return 1; }
  # Why each setting:
  # - auth none + "ms mon client mode = crc": no cephx; without the latter radosgw (though
  #   not radosgw-admin) keeps failing to authenticate to the mon ("get_initial_auth_request
  #   returned -13" in client.rgw.log) and never answers.
  # - every path (run dir, logs, cluster log, data, crash) under DIR, so clusters can run side
  #   by side and nothing lands in /var/run/ceph or /var/log/ceph; keyring /dev/null keeps
  #   clients from looking in /etc/ceph.
  # - pools of size 1 (one OSD); "allow pool size one" or the mon refuses them. 8 PGs a pool
  #   (no mgr here, so no autoscaler), chooseleaf type 0 (osd): one host suffices.
  # - warnings a one-node throwaway cluster always has are off, and the free-space checks of
  #   the mon data (a full /tmp would stop the mon at 5%) are set to 1%.
  # - paxos propose interval 0.1 (default 1 s): each map change commits faster; halves start.
  # - BlueStore on a sparse file: "block create" + a size, no block device; a fixed 64 MB
  #   cache (no autotune) caps the OSD's memory.
  # - rgw: beast on 127.0.0.1:PORT; path-style only (no rgw dns name, so no virtual-host
  #   buckets). Every request but an anonymous read of public data must be signed; a SigV4
  #   signature must cover x-amz-content-sha256 (RGW answers SignatureDoesNotMatch
  #   otherwise). RGW also still accepts SigV2, which mailvault does not use.
  cat >"$c/ceph.conf" <<EOF || { offsite_stop_rgw; return 1; }
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $run
log file = $c/log/\$name.log
mon cluster log file = $c/log/\$cluster.\$channel.log
crash dir = $c/crash
keyring = /dev/null
mon data = $c/mon
osd data = $c/osd
rgw data = $c/rgw
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 1
mon data avail crit = 1
paxos propose interval = 0.1
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $OFFSITE_RGW_OSD_BYTES
bluestore cache autotune = false
bluestore cache size = 64M
bluestore fsck on mkfs = false
osd fast shutdown notify mon = false

[client]
# The objecter resends ops that were waiting for an OSD only on its tick (default 5 s);
# radosgw and radosgw-admin start before the OSD is up, so a short tick saves seconds.
objecter tick interval = 0.5

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw thread pool size = 64
rgw enable usage log = false
EOF

  # The mon first; the OSD's mkfs needs no mon (--no-mon-config: the fsid is in ceph.conf),
  # so it runs meanwhile.
  monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$c/monmap" >/dev/null &&
    ceph-mon -c "$c/ceph.conf" --mkfs -i a --monmap "$c/monmap" --setuser root --setgroup root \
      >"$c/log/mon-mkfs.out" 2>&1 || { offsite__rgw_fail "ceph-mon --mkfs failed"; offsite_stop_rgw; return 1; }
  ceph-osd -c "$c/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" --no-mon-config \
    --setuser root --setgroup root >"$c/log/osd-mkfs.out" 2>&1 &
  mkfs_pid=$!
  # -f: stay in the foreground (proc.py detaches it); root stays root (no drop to "ceph")
  if ! offsite__spawn "$c/pids/mon.pid" "$c/log/mon.out" \
    ceph-mon -f -c "$c/ceph.conf" -i a --setuser root --setgroup root ||
    ! offsite__wait_listen "$mon_port" 30 "$(offsite__pid_of "$c/pids/mon.pid")"; then
    wait "$mkfs_pid" || true
    offsite__rgw_fail "ceph-mon did not start"
    offsite_stop_rgw
    return 1
  fi
  if ! wait "$mkfs_pid"; then
    offsite__rgw_fail "ceph-osd --mkfs failed (see $c/log/osd-mkfs.out)"
    offsite_stop_rgw
    return 1
  fi
  # Register osd.0 and start it; it adds itself to the CRUSH map (host = this machine).
  if ! offsite__ceph osd new "$osd_uuid" 0 >"$c/log/osd-new.out" 2>&1 ||
    ! offsite__spawn "$c/pids/osd.pid" "$c/log/osd.out" \
      ceph-osd -f -c "$c/ceph.conf" -i 0 --setuser root --setgroup root; then
    offsite__rgw_fail "could not register or start osd.0"
    offsite_stop_rgw
    return 1
  fi
  # radosgw need not wait for the OSD: it creates its pools and waits for them itself.
  offsite__spawn "$c/pids/rgw.pid" "$c/log/rgw.out" \
    radosgw -f -c "$c/ceph.conf" -n client.rgw --setuser root --setgroup root ||
    { offsite__rgw_fail "radosgw did not start"; offsite_stop_rgw; return 1; }

  # The S3 user, with keys of our own (radosgw-admin waits for the OSD to come up).
  # (python, not "tr </dev/urandom | head": that pipe ends in SIGPIPE, fatal under pipefail)
  read -r access secret < <(offsite__py -c 'import secrets, string as s
print("".join(secrets.choice(s.ascii_uppercase + s.digits) for _ in range(20)),
      "".join(secrets.choice(s.ascii_letters + s.digits) for _ in range(40)))') &&
    [[ ${#access} == 20 && ${#secret} == 40 ]] || { offsite__err "cannot make S3 keys"; offsite_stop_rgw; return 1; }
  if ! timeout 90 radosgw-admin -c "$c/ceph.conf" user create --uid=mailvault \
    --display-name="mailvault tests" --access-key="$access" --secret="$secret" \
    >"$c/log/user-create.out" 2>&1; then
    offsite__rgw_fail "radosgw-admin user create failed (see $c/log/user-create.out)"
    offsite_stop_rgw
    return 1
  fi
  export MV_S3_PORT=$rgw_port MV_S3_ENDPOINT=http://127.0.0.1:$rgw_port
  export MV_S3_ACCESS=$access MV_S3_SECRET=$secret
  (umask 077 && echo "$access $secret" >"$dir/s3.cred") && chmod 0600 "$dir/s3.cred" &&
    (umask 077 && cat >"$dir/s3cfg" <<EOF
[default]
access_key = $access
secret_key = $secret
host_base = 127.0.0.1:$rgw_port
host_bucket = 127.0.0.1:$rgw_port
use_https = False
signature_v2 = False
check_ssl_certificate = False
EOF
    ) && : >"$dir/rclone.conf" || { offsite__err "cannot write $dir/s3.cred"; offsite_stop_rgw; return 1; }
  offsite__rgw_wait 60 || { offsite_stop_rgw; return 1; }
  echo "servers.sh: RGW up in $((SECONDS - t0)) s at $MV_S3_ENDPOINT (cluster in $c)" >&2
}

# offsite__rgw_wait SECONDS: until the gateway answers a signed ListBuckets with 200.
offsite__rgw_wait() {
  local deadline=$((SECONDS + $1)) c=$OFFSITE_RGW_DIR/ceph pid
  pid=$(offsite__pid_of "$c/pids/rgw.pid") || true
  while :; do
    offsite__alive "$pid" || { offsite__rgw_fail "radosgw exited"; return 1; }
    if offsite__listening "$MV_S3_PORT" &&
      [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$MV_S3_ENDPOINT/") == 200 ]] &&
      offsite_s3req raw GET / >/dev/null 2>&1; then
      return 0
    fi
    ((SECONDS < deadline)) || { offsite__rgw_fail "radosgw does not answer signed S3 requests after $1 s"; return 1; }
    sleep 0.2
  done
}

offsite_stop_rgw() {
  [[ -n $OFFSITE_RGW_DIR ]] || return 0
  local c=$OFFSITE_RGW_DIR/ceph pids p n d
  # radosgw gets a TERM (3 s grace); the OSD and the mon are killed outright: the cluster is
  # thrown away, and a clean OSD shutdown costs seconds of fsyncs.
  p=$(offsite__pid_of "$c/pids/rgw.pid") && { offsite__stop_pids 3 "$p" || offsite__err "radosgw $p did not exit"; }
  pids=()
  for n in osd mon; do
    p=$(offsite__pid_of "$c/pids/$n.pid") && offsite__alive "$p" && pids+=("$p")
  done
  if ((${#pids[@]})); then
    kill -KILL "${pids[@]}" 2>/dev/null || true
    offsite__wait_gone 10 "${pids[@]}" || offsite__err "Ceph daemon(s) ${pids[*]} did not exit"
  fi
  offsite__end_watchdog "$c"
  if [[ -r $c/rmdirs ]]; then
    while read -r d; do rm -rf -- "$d"; done <"$c/rmdirs"
    rm -f -- "$c/rmdirs"
  fi
  OFFSITE_RGW_DIR=""
}

offsite_kill_rgw() {
  [[ -n $OFFSITE_RGW_DIR ]] || { offsite__err "no RGW running"; return 1; }
  local pid
  pid=$(offsite__pid_of "$OFFSITE_RGW_DIR/ceph/pids/rgw.pid") || { offsite__err "no radosgw pid"; return 1; }
  offsite__alive "$pid" && { kill -KILL "$pid" 2>/dev/null || true; }
  offsite__wait_gone 10 "$pid" || { offsite__err "radosgw $pid does not die"; return 1; }
}

offsite_restart_rgw() {
  [[ -n $OFFSITE_RGW_DIR ]] || { offsite__err "no RGW cluster running"; return 1; }
  local c=$OFFSITE_RGW_DIR/ceph pid
  pid=$(offsite__pid_of "$c/pids/rgw.pid") || true
  if offsite__alive "$pid"; then offsite__err "radosgw ($pid) still runs"; return 1; fi
  echo "---- restart $(date -u +%FT%TZ) ----" >>"$c/log/rgw.out"
  offsite__spawn "$c/pids/rgw.pid" "$c/log/rgw.out" \
    radosgw -f -c "$c/ceph.conf" -n client.rgw --setuser root --setgroup root &&
    offsite__rgw_wait 60
}

offsite_s3req() { offsite__py "$offsite__here/s3req.py" "$@"; }

offsite_rgw_versioning() {
  [[ -n ${1:-} ]] || { offsite__err "usage: offsite_rgw_versioning BUCKET [Enabled|Suspended]"; return 2; }
  offsite_s3req versioning "$1" "${2:-Enabled}"
}

offsite_rgw_versions() {
  [[ -n ${1:-} ]] || { offsite__err "usage: offsite_rgw_versions BUCKET [PREFIX]"; return 2; }
  offsite_s3req versions "$@"
}

offsite_s3cmd() {
  [[ -n $OFFSITE_RGW_DIR ]] || { offsite__err "no RGW running"; return 1; }
  s3cmd -c "$OFFSITE_RGW_DIR/s3cfg" "$@"
}

offsite_rclone_env() {
  [[ -n $OFFSITE_RGW_DIR ]] || { offsite__err "no RGW running"; return 1; }
  export RCLONE_CONFIG=$OFFSITE_RGW_DIR/rclone.conf # empty: no "config file not found" notice
  export RCLONE_CONFIG_MVS3_TYPE=s3 RCLONE_CONFIG_MVS3_PROVIDER=Ceph
  export RCLONE_CONFIG_MVS3_ENDPOINT=$MV_S3_ENDPOINT RCLONE_CONFIG_MVS3_FORCE_PATH_STYLE=true
  export RCLONE_CONFIG_MVS3_ACCESS_KEY_ID=$MV_S3_ACCESS RCLONE_CONFIG_MVS3_SECRET_ACCESS_KEY=$MV_S3_SECRET
  # The AWS SDK inside rclone reads AWS_CA_BUNDLE and then refuses rclone's own HTTP
  # transport; plain http needs no CA anyway.
  unset AWS_CA_BUNDLE
}

offsite_rgw_rss_mb() {
  [[ -n $OFFSITE_RGW_DIR ]] || { offsite__err "no RGW running"; return 1; }
  local n p kb total=0
  for n in mon osd rgw; do
    p=$(offsite__pid_of "$OFFSITE_RGW_DIR/ceph/pids/$n.pid") || continue
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || kb=0
    total=$((total + ${kb:-0}))
  done
  echo $((total / 1024))
}

# =============================================================================================
# SFTP: OpenSSH sshd
# =============================================================================================
# Layout of DIR: id_ed25519{,.pub} (the client's key), known_hosts, remote/ (the target
# directory), sshd/{sshd_config,ssh_host_ed25519_key,authorized_keys,sshd.log,pids/}.
# Why an unprivileged user (mvsftp) rather than root: permissions and disk space then behave
# as on a real backup host (root ignores file modes and may use ext4's reserved blocks).
OFFSITE_SSHD_DIR=${OFFSITE_SSHD_DIR:-}

# Creates $OFFSITE_SFTP_USER when missing. Its password field is "*", not useradd's "!":
# with UsePAM no, sshd refuses "!" accounts as locked even for key logins.
offsite__ensure_sftp_user() {
  local u=$OFFSITE_SFTP_USER
  [[ $u == root ]] && return 0
  if ! id -u "$u" >/dev/null 2>&1; then
    # (a test running in parallel may have created it meanwhile: check again on failure)
    useradd --no-create-home --home-dir /nonexistent --shell /bin/sh --user-group "$u" 2>/dev/null ||
      id -u "$u" >/dev/null 2>&1 || { offsite__err "useradd $u failed (needs root)"; return 1; }
  fi
  [[ $(getent shadow "$u" | cut -d: -f2) == '*' ]] || usermod -p '*' "$u" ||
    { offsite__err "usermod -p '*' $u failed"; return 1; }
}

# The user must reach DIR (authorized_keys is read with the user's rights when StrictModes
# is off, and DIR/remote must be reachable): add o+x to DIR and any parent that lacks it.
offsite__make_reachable() {
  local d=$1
  while [[ -n $d && $d != / ]]; do
    if [[ $(stat -c %A "$d") != *[xt] ]]; then
      chmod o+x "$d" || return 1
      [[ $d == "$1" ]] || offsite__err "note: made $d searchable by others (o+x) for $OFFSITE_SFTP_USER"
    fi
    d=$(dirname "$d")
  done
}

offsite_start_sshd() {
  local dir s port pub
  [[ -z $OFFSITE_SSHD_DIR ]] || { offsite__err "an sshd from $OFFSITE_SSHD_DIR is running"; return 1; }
  [[ -x /usr/sbin/sshd ]] || { offsite__err "/usr/sbin/sshd is missing (apt-get install openssh-server)"; return 1; }
  dir=$(offsite__absdir "${1:-}") || return 1
  s=$dir/sshd
  offsite__ensure_sftp_user || return 1
  rm -rf -- "$s" "$dir/id_ed25519" "$dir/id_ed25519.pub" "$dir/known_hosts" &&
    mkdir -p "$s/pids" "$dir/remote" || { offsite__err "cannot prepare $dir"; return 1; }
  chown "$OFFSITE_SFTP_USER:" "$dir/remote" && chmod 0755 "$dir/remote" &&
    { [[ $OFFSITE_SFTP_USER == root ]] || offsite__make_reachable "$dir"; } || { offsite__err "cannot set up permissions in $dir"; return 1; }
  # the privilege separation directory sshd insists on
  mkdir -p /run/sshd && chmod 0755 /run/sshd || { offsite__err "cannot create /run/sshd"; return 1; }
  ssh-keygen -q -t ed25519 -N '' -C "mailvault-test-host" -f "$s/ssh_host_ed25519_key" &&
    ssh-keygen -q -t ed25519 -N '' -C "mailvault-test-client" -f "$dir/id_ed25519" &&
    install -m 0644 "$dir/id_ed25519.pub" "$s/authorized_keys" ||
    { offsite__err "ssh-keygen failed"; return 1; }
  port=$(offsite_free_port) || return 1
  # Why: key-only login for one user; StrictModes no (DIR is the test's, not a home); no
  # PAM (key logins need none; hence the "*" password field above); internal-sftp, which
  # runs inside sshd (no shell involved) and offers posix-rename@openssh.com,
  # fsync@openssh.com, statvfs@openssh.com and hardlink@openssh.com, exactly as
  # /usr/lib/openssh/sftp-server does (the same code; checked with sftp -vv). MaxStartups
  # raised: tests open many connections in quick succession.
  cat >"$s/sshd_config" <<EOF || return 1
Port $port
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $s/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $s/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin $([[ $OFFSITE_SFTP_USER == root ]] && echo prohibit-password || echo no)
AllowUsers $OFFSITE_SFTP_USER
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
MaxStartups 100:30:200
MaxSessions 50
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
  /usr/sbin/sshd -t -f "$s/sshd_config" 2>"$s/config-test.out" ||
    { offsite__err "sshd rejects its config"; offsite__tail_log "$s/config-test.out"; return 1; }
  read -r _ pub _ <"$s/ssh_host_ed25519_key.pub"
  echo "[127.0.0.1]:$port ssh-ed25519 $pub" >"$dir/known_hosts"
  echo "$port" >"$s/port"
  OFFSITE_SSHD_DIR=$dir
  export MV_SFTP_PORT=$port MV_SFTP_USER=$OFFSITE_SFTP_USER MV_SFTP_IDENTITY=$dir/id_ed25519
  export MV_SFTP_KNOWN_HOSTS=$dir/known_hosts MV_SFTP_DIR=$dir/remote
  export MV_SFTP_URL=sftp://$OFFSITE_SFTP_USER@127.0.0.1:$port$dir/remote
  offsite__start_watchdog "$s" && offsite__sshd_spawn || { offsite_stop_sshd; return 1; }
}

# Starts the listener (-D: no detach, proc.py detaches it; -E: log file) and waits until a
# login works.
offsite__sshd_spawn() {
  local s=$OFFSITE_SSHD_DIR/sshd deadline=$((SECONDS + 20))
  offsite__spawn "$s/pids/sshd.pid" "$s/sshd.out" /usr/sbin/sshd -D -f "$s/sshd_config" -E "$s/sshd.log" &&
    offsite__wait_listen "$MV_SFTP_PORT" 20 "$(offsite__pid_of "$s/pids/sshd.pid")" ||
    { offsite__err "sshd did not start"; offsite__tail_log "$s/sshd.log"; offsite__tail_log "$s/sshd.out"; return 1; }
  until offsite_sftp -b - >/dev/null 2>"$s/probe.err" <<<"pwd"; do
    ((SECONDS < deadline)) || { offsite__err "sftp login fails"; offsite__tail_log "$s/probe.err"; offsite__tail_log "$s/sshd.log"; return 1; }
    sleep 0.1
  done
}

# sftp to the private sshd with the pinned host key, the test key only, no prompts.
offsite_sftp() {
  [[ -n ${MV_SFTP_PORT:-} ]] || { offsite__err "no sshd started"; return 1; }
  sftp -q -P "$MV_SFTP_PORT" -i "$MV_SFTP_IDENTITY" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o UserKnownHostsFile="$MV_SFTP_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null \
    -o StrictHostKeyChecking=yes -o ConnectTimeout=10 "$@" "$MV_SFTP_USER@127.0.0.1"
}

offsite_known_hosts_line() {
  [[ -n $OFFSITE_SSHD_DIR && -n ${1:-} ]] || { offsite__err "usage: offsite_known_hosts_line PORT (with an sshd running)"; return 1; }
  local pub
  read -r _ pub _ <"$OFFSITE_SSHD_DIR/sshd/ssh_host_ed25519_key.pub"
  echo "[127.0.0.1]:$1 ssh-ed25519 $pub"
}

# offsite__sshd_tree_kill SIGNAL GRACE: the listener and every process under it (each
# connection's sshd runs in a session of its own, so a process group kill would miss them).
offsite__sshd_tree_kill() {
  local sig=$1 grace=$2 pid pids
  pid=$(offsite__pid_of "$OFFSITE_SSHD_DIR/sshd/pids/sshd.pid") || return 0
  offsite__alive "$pid" || return 0
  mapfile -t pids < <(offsite__tree "$pid")
  if [[ $sig == KILL ]]; then
    kill -KILL "${pids[@]}" 2>/dev/null || true
    offsite__wait_gone "$grace" "${pids[@]}"
  else
    offsite__stop_pids "$grace" "${pids[@]}"
  fi
}

offsite_stop_sshd() {
  [[ -n $OFFSITE_SSHD_DIR ]] || return 0
  offsite__sshd_tree_kill TERM 3 || offsite__err "sshd processes did not exit"
  offsite_sftp_unmount || true
  offsite__end_watchdog "$OFFSITE_SSHD_DIR/sshd"
  OFFSITE_SSHD_DIR=""
}

offsite_kill_sshd() {
  [[ -n $OFFSITE_SSHD_DIR ]] || { offsite__err "no sshd running"; return 1; }
  offsite__sshd_tree_kill KILL 10 || { offsite__err "sshd processes do not die"; return 1; }
}

offsite_restart_sshd() {
  [[ -n $OFFSITE_SSHD_DIR ]] || { offsite__err "no sshd set up"; return 1; }
  local pid
  pid=$(offsite__pid_of "$OFFSITE_SSHD_DIR/sshd/pids/sshd.pid") || true
  if offsite__alive "$pid"; then offsite__err "sshd ($pid) still runs"; return 1; fi
  offsite__sshd_spawn
}

# offsite_sftp_small_disk SIZE: a SIZE filesystem on MV_SFTP_DIR (tmpfs; a loop-mounted
# ext4 image, no reserved blocks, when tmpfs is refused). The mount point is noted in
# sshd/mounts for the watchdog.
offsite_sftp_small_disk() {
  [[ -n $OFFSITE_SSHD_DIR && -n ${1:-} ]] || { offsite__err "usage: offsite_sftp_small_disk SIZE (with an sshd running)"; return 1; }
  local s=$OFFSITE_SSHD_DIR/sshd r=$OFFSITE_SSHD_DIR/remote uid gid
  mountpoint -q "$r" && { offsite__err "$r is already mounted"; return 1; }
  uid=$(id -u "$MV_SFTP_USER") && gid=$(id -g "$MV_SFTP_USER") || return 1
  echo "$r" >>"$s/mounts"
  if mount -t tmpfs -o "size=$1,mode=0755,uid=$uid,gid=$gid" mv-offsite-small "$r" 2>"$s/mount.err"; then
    return 0
  fi
  offsite__err "tmpfs mount refused ($(cat "$s/mount.err")); trying a loop-mounted ext4 image"
  rm -f -- "$s/small.img"
  truncate -s "$1" "$s/small.img" && mkfs.ext4 -q -F -m 0 "$s/small.img" >/dev/null 2>&1 &&
    mount -o loop "$s/small.img" "$r" && chown "$uid:$gid" "$r" && chmod 0755 "$r" ||
    { offsite__err "no small filesystem possible here (tmpfs and loop mounts refused)"; return 1; }
}

offsite_sftp_unmount() {
  [[ -n $OFFSITE_SSHD_DIR ]] || return 0
  local s=$OFFSITE_SSHD_DIR/sshd r=$OFFSITE_SSHD_DIR/remote
  if mountpoint -q "$r"; then
    # lazily if busy (a session may still hold a file open on it)
    umount "$r" 2>/dev/null || umount -l "$r" || { offsite__err "cannot unmount $r"; return 1; }
  fi
  rm -f -- "$s/mounts" "$s/small.img"
}

# =============================================================================================
# Fault-injecting proxy
# =============================================================================================
# (kept when this file is sourced again)
declare -p OFFSITE_PROXIES >/dev/null 2>&1 || declare -gA OFFSITE_PROXIES=() # listen port -> state dir
OFFSITE_LAST_PROXY=${OFFSITE_LAST_PROXY:-}

offsite_start_proxy() {
  local var=${1:-} target=${2:-} port d pid deadline
  [[ $var =~ ^[A-Za-z_][A-Za-z0-9_]*$ && $target =~ ^[0-9]+$ ]] ||
    { offsite__err "usage: offsite_start_proxy LISTEN_PORT_VAR TARGET_PORT"; return 2; }
  port=$(offsite_free_port) && d=$(mktemp -d /tmp/mv-offsite-proxy.XXXXXX) || return 1
  mkdir -p "$d/pids" && echo "$d" >"$d/rmdirs" # the watchdog removes it too
  offsite__start_watchdog "$d" &&
    offsite__spawn "$d/pids/proxy.pid" "$d/proxy.log" \
      "$(command -v /usr/bin/python3 || command -v python3)" "$offsite__here/proxy.py" \
      --port "$port" --target "$target" --dir "$d" || { offsite__end_watchdog "$d"; rm -rf -- "$d"; return 1; }
  OFFSITE_PROXIES[$port]=$d
  OFFSITE_LAST_PROXY=$port
  pid=$(offsite__pid_of "$d/pids/proxy.pid") || true
  deadline=$((SECONDS + 10))
  until [[ -s $d/state ]] && offsite__listening "$port"; do
    if ! offsite__alive "$pid" || ((SECONDS >= deadline)); then
      offsite__err "proxy did not start"
      offsite__tail_log "$d/proxy.log"
      offsite_stop_proxy "$port"
      return 1
    fi
    sleep 0.02
  done
  # through the proxy, ssh sees host [127.0.0.1]:PORT: pin the same key for it
  if [[ -n $OFFSITE_SSHD_DIR && $target == "${MV_SFTP_PORT:-}" ]]; then
    offsite_known_hosts_line "$port" >>"$MV_SFTP_KNOWN_HOSTS"
  fi
  printf -v "$var" '%s' "$port"
}

# offsite__proxy_cmd PORT COMMAND...: hands the command to the proxy and waits until its
# state file acknowledges it.
offsite__proxy_cmd() {
  local port=$1 d="" seq deadline
  shift
  [[ -n $port ]] && d=${OFFSITE_PROXIES[$port]:-}
  [[ -n ${d:-} ]] || { offsite__err "no proxy on port ${port:-?}"; return 1; }
  seq=$(($(date +%s%N) / 1000)) # unique and increasing
  echo "$seq $*" >"$d/control.tmp" && mv -f "$d/control.tmp" "$d/control" || return 1
  deadline=$((SECONDS + 10))
  until grep -q "^seq=$seq " "$d/state" 2>/dev/null; do
    ((SECONDS < deadline)) || { offsite__err "proxy on $port does not acknowledge '$*'"; offsite__tail_log "$d/proxy.log"; return 1; }
    sleep 0.01
  done
}

offsite_proxy_drop() {
  local how=${1:-reset}
  [[ $how == reset || $how == blackhole ]] || { offsite__err "usage: offsite_proxy_drop [reset|blackhole] [PORT]"; return 2; }
  offsite__proxy_cmd "${2:-$OFFSITE_LAST_PROXY}" drop "$how"
}
offsite_proxy_restore() { offsite__proxy_cmd "${1:-$OFFSITE_LAST_PROXY}" pass 0; }
offsite_proxy_throttle() {
  [[ ${1:-} =~ ^[0-9]+$ ]] || { offsite__err "usage: offsite_proxy_throttle BYTES_PER_SEC [PORT]"; return 2; }
  offsite__proxy_cmd "${2:-$OFFSITE_LAST_PROXY}" pass "$1"
}
offsite_proxy_stats() {
  local port=${1:-$OFFSITE_LAST_PROXY}
  offsite__proxy_cmd "$port" stats && cat "${OFFSITE_PROXIES[$port]}/state"
}

offsite_stop_proxy() {
  local port=${1:-$OFFSITE_LAST_PROXY} d="" pid
  [[ -n $port ]] && d=${OFFSITE_PROXIES[$port]:-}
  [[ -n $d ]] || return 0
  pid=$(offsite__pid_of "$d/pids/proxy.pid") && { offsite__stop_pids 3 "$pid" || offsite__err "proxy $pid does not exit"; }
  offsite__end_watchdog "$d"
  rm -rf -- "$d"
  unset "OFFSITE_PROXIES[$port]"
  [[ $OFFSITE_LAST_PROXY != "$port" ]] || OFFSITE_LAST_PROXY=""
  return 0
}

# =============================================================================================
# Clock skew and clean-up
# =============================================================================================

# offsite_skewed_prefix [OFFSET]: prints the prefix that runs a program with its clock
# OFFSET (default +15m; faketime syntax: +20m, -1h, +90s) off, e.g.
#   $(offsite_skewed_prefix +20m) ./mailvault replicate ...
# libfaketime (LD_PRELOAD) shifts time(), gettimeofday() and clock_gettime(CLOCK_REALTIME),
# which is what OpenSSL, libcurl and std::chrono::system_clock read for dates.
# DONT_FAKE_MONOTONIC keeps the monotonic clock real, so timeouts and condition-variable
# waits behave (faking it is known to hang some threaded programs).
# verify_asan_link_order=0: an AddressSanitizer build otherwise aborts at once ("ASan runtime
# does not come first in initial library list"); the time functions still resolve to
# libfaketime then (checked with LD_DEBUG=bindings on build/asan/cli/mailvault).
offsite_skewed_prefix() {
  command -v faketime >/dev/null || { offsite__err "faketime is missing (apt-get install faketime)"; return 1; }
  echo "env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f ${1:-+15m}"
}

# offsite_cleanup_all: stops every proxy, the sshd (and its mount) and the RGW this shell
# started. Never fails.
offsite_cleanup_all() {
  local p
  for p in "${!OFFSITE_PROXIES[@]}"; do offsite_stop_proxy "$p" || true; done
  offsite_stop_sshd || true
  offsite_stop_rgw || true
  return 0
}
