# shellcheck shell=bash
# Helpers that start real mail servers on 127.0.0.1, each inside its own directory, for the
# integration tests of mailvault's SMTP/LMTP journal capture. Source this file; it defines
# functions only (no side effects on source). Every function prints a clear error to stderr
# and returns non-zero on failure. Starting servers needs root (Postfix's master and Dovecot
# must start as root to drop privileges); nothing here touches the system Postfix or Dovecot.
#
#   free_port                                   print a TCP port that is free on 127.0.0.1
#   wait_port PORT [SECONDS=10]                 wait until something listens on 127.0.0.1:PORT
#   smtp_sink_start DIR PORT [OPTION...]        smtp-sink dumping each message to DIR/msg.*
#   smtp_sink_stop DIR
#   postfix_start DIR LISTEN_PORT JOURNAL_PORT MODE
#                                               private Postfix in DIR; MODE always_bcc or
#                                               recipient_bcc (see postfix_start below)
#   postfix_stop DIR                            stop it (waits for the master to exit)
#   postfix_queue_empty DIR                     true when its queue holds no message
#   postfix_wait_queue_empty DIR [SECONDS=30]   wait for that
#   postfix_flush DIR                           retry deferred mail now (postqueue -f)
#   postfix_log DIR                             path of its log file
#   dovecot_lmtp_start DIR PORT [IMAP_PORT]     private Dovecot: LMTP (and IMAP) on 127.0.0.1
#   dovecot_stop DIR                            stop it (waits for the master to exit)
#   dovecot_log DIR                             path of its log file
#   mv_ensure_test_user                         create the unprivileged user mvtest if missing
#
# DIR: use a short path under /tmp (mktemp -d). The servers' unix sockets live below it
# (DIR/queue/private/..., DIR/run/...) and a socket path must stay under 108 bytes. DIR and
# its parents below /tmp are made o+x so the postfix and mvtest users can reach inside.
# Zombie masters: on this VM, PID 1 reaps orphans late, so a stopped master lingers as a
# zombie for seconds; the stop functions treat zombies as gone (doveadm stop does not, and
# would wait for them).

MV_TEST_USER=${MV_TEST_USER:-mvtest}

mv__err() { echo "servers.sh: $*" >&2; }

# Last lines of a log file, indented, to stderr.
mv__tail_log() {
  local f=$1 n=${2:-25}
  if [[ -s $f ]]; then
    echo "---- last $n lines of $f ----" >&2
    tail -n "$n" "$f" | sed 's/^/  | /' >&2
    echo "----" >&2
  else
    echo "(log $f is missing or empty)" >&2
  fi
}

# Absolute path of an existing or to-be-created directory, created if needed.
mv__absdir() {
  local d=$1
  [[ -n $d ]] || { mv__err "empty directory argument"; return 1; }
  mkdir -p -- "$d" || { mv__err "cannot create $d"; return 1; }
  (cd -- "$d" && pwd -P)
}

mv__is_port() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 > 0 && 10#$1 < 65536)); }

# True while process PID runs. A zombie counts as gone: daemonized masters are reparented to
# PID 1, which on some machines (containers, VM init shims) reaps them only seconds later.
mv__pid_alive() {
  local pid=$1 stat
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Pids of the live (non-zombie) processes in process group PGID.
mv__pgroup_pids() {
  ps -e -o pid=,pgid=,stat= 2>/dev/null | awk -v g="$1" '$2 == g && $3 !~ /^Z/ { print $1 }'
}

# True when 127.0.0.1:PORT (or 0.0.0.0:PORT) has a listening TCP socket. Reads
# /proc/net/tcp{,6}, so it opens no connection (no "lost connection" noise in server logs).
mv__port_listening() {
  local port=$1 hex
  printf -v hex '%04X' "$port"
  if [[ -r /proc/net/tcp ]]; then
    # fields: sl local_address rem_address st ...; st 0A = LISTEN
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p {
        a = substr($2, 1, length($2) - 5)
        if (a == "0100007F" || a == "00000000") found = 1
      }
      END { exit !found }' /proc/net/tcp && return 0
    # an IPv6 wildcard listener also accepts 127.0.0.1 (unless v6only)
    [[ -r /proc/net/tcp6 ]] && awk -v p=":$hex" 'NR > 1 && $4 == "0A" &&
        substr($2, length($2) - 4) == p &&
        substr($2, 1, length($2) - 5) == "00000000000000000000000000000000" { found = 1 }
      END { exit !found }' /proc/net/tcp6 && return 0
    return 1
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# True when PORT appears in /proc/net/tcp{,6} in any state (listening, connected, TIME_WAIT).
mv__port_in_use() {
  local port=$1 hex
  printf -v hex '%04X' "$port"
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v p=":$hex" 'NR > 0 && (substr($2, length($2) - 4) == p || substr($3, length($3) - 4) == p) { found = 1 }
      END { exit !found }'
}

# free_port: prints a TCP port with no socket on it, picked at random from 20000-32767 (below
# Linux's ephemeral range, so outgoing connections do not grab it meanwhile). Nothing binds
# it, so start the server soon after; to keep two calls (even from parallel tests) from
# handing out the same port before either is bound, each port handed out is noted for 5
# minutes as a directory in $MV_PORT_REGISTRY (default /tmp/mailvault-test-ports).
free_port() {
  local i port reg=${MV_PORT_REGISTRY:-/tmp/mailvault-test-ports}
  mkdir -p "$reg" 2>/dev/null && chmod 1777 "$reg" 2>/dev/null
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + (RANDOM % 12768)))
    if [[ -r /proc/net/tcp ]]; then
      mv__port_in_use "$port" && continue
    elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    if [[ -d $reg ]]; then
      if ! mkdir "$reg/$port" 2>/dev/null; then
        # handed out before: reusable once the note is older than 5 minutes
        [[ -n $(find "$reg/$port" -maxdepth 0 -mmin +5 2>/dev/null) ]] || continue
        touch "$reg/$port" 2>/dev/null || continue
      fi
    fi
    echo "$port"
    return 0
  done
  mv__err "free_port: found no free port in 200 tries"
  return 1
}

# wait_port PORT [SECONDS]: waits (default 10 s) until 127.0.0.1:PORT listens.
wait_port() {
  local port=$1 secs=${2:-10} deadline
  mv__is_port "$port" || { mv__err "wait_port: bad port '$port'"; return 2; }
  deadline=$((SECONDS + secs))
  while :; do
    mv__port_listening "$port" && return 0
    ((SECONDS >= deadline)) && break
    sleep 0.05
  done
  mv__err "wait_port: nothing listens on 127.0.0.1:$port after ${secs}s"
  return 1
}

# Waits until process PID and the rest of its process group are gone (default 10 s). The
# Postfix and Dovecot masters lead their own process group.
mv__wait_pid_gone() {
  local pid=$1 secs=${2:-10} deadline
  deadline=$((SECONDS + secs))
  while mv__pid_alive "$pid" || [[ -n $(mv__pgroup_pids "$pid") ]]; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.05
  done
  return 0
}

# Stops master PID of a server in DIR: STOP_CMD..., then waits; SIGKILLs the group if needed.
mv__stop_master() {
  local what=$1 pid=$2 log=$3
  shift 3
  "$@" >/dev/null 2>&1 || kill "$pid" 2>/dev/null
  mv__wait_pid_gone "$pid" "${MV_STOP_TIMEOUT:-10}" && return 0
  mv__err "$what: master $pid did not exit within ${MV_STOP_TIMEOUT:-10}s; killing its process group"
  mv__tail_log "$log"
  kill -9 -- -"$pid" 2>/dev/null
  kill -9 "$pid" 2>/dev/null
  return 1
}

# mv_ensure_test_user: creates the unprivileged user (and group) $MV_TEST_USER (mvtest) if
# missing; a regular (non-system) uid, so it passes Dovecot's first_valid_uid.
mv_ensure_test_user() {
  id -u "$MV_TEST_USER" >/dev/null 2>&1 && return 0
  if ((EUID != 0)); then
    mv__err "user $MV_TEST_USER is missing and only root can create it"
    return 1
  fi
  useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group \
    "$MV_TEST_USER" || { mv__err "useradd $MV_TEST_USER failed"; return 1; }
}

# Makes DIR and its parents searchable by others so the unprivileged server processes
# (postfix, mvtest) can reach what is under DIR (mktemp -d makes 0700 directories). Only
# DIR and parents below /tmp or $TMPDIR are changed (chmod o+x); any other parent that is
# not searchable is an error (use a DIR under /tmp, e.g. from mktemp -d).
mv__make_traversable() {
  local d=$1 tmp
  tmp=$(cd "${TMPDIR:-/tmp}" 2>/dev/null && pwd -P)
  chmod o+x "$d" || { mv__err "cannot chmod o+x $d"; return 1; }
  d=$(dirname "$d")
  while [[ $d != / ]]; do
    if [[ $(stat -c %A "$d") != *[xt] ]]; then
      if [[ $d == /tmp/* || ( -n $tmp && $d == "$tmp"/* ) ]]; then
        chmod o+x "$d" || { mv__err "cannot chmod o+x $d"; return 1; }
      else
        mv__err "$d is not searchable by other users, so unprivileged server processes cannot reach below it; use a directory under /tmp (mktemp -d)"
        return 1
      fi
    fi
    d=$(dirname "$d")
  done
}

########################################################################################
# smtp-sink (Postfix's test server), a stand-in capture server
########################################################################################

# smtp_sink_start DIR PORT [SMTP_SINK_OPTION...]
# Runs `smtp-sink -u postfix -d DIR/msg. [OPTIONS] 127.0.0.1:PORT 100` in the background
# (pid in DIR/smtp-sink.pid, output in DIR/smtp-sink.log): each mail transaction is written
# to its own file DIR/msg.RANDOMHEX, which starts with the headers X-Client-Addr,
# X-Client-Proto, X-Helo-Args, X-Mail-Args (MAIL FROM arguments) and one X-Rcpt-Args per
# RCPT TO (e.g. "X-Rcpt-Args: <archive@journal.test> ORCPT=... NOTIFY=NEVER"), then a
# Received: header, then the message as received. Options, e.g.: -L (LMTP), -r . (answer
# the end of DATA with 450), -f rcpt (5xx to RCPT), -Q data (421 and hang up), -w SECS.
smtp_sink_start() {
  if (($# < 2)); then
    mv__err "usage: smtp_sink_start DIR PORT [SMTP_SINK_OPTION...]"
    return 2
  fi
  local dir port=$2 pid
  mv__is_port "$port" || { mv__err "smtp_sink_start: bad port '$port'"; return 2; }
  command -v smtp-sink >/dev/null || { mv__err "smtp_sink_start: smtp-sink (package postfix) is not installed"; return 1; }
  dir=$(mv__absdir "$1") || return 1
  shift 2
  if [[ -r $dir/smtp-sink.pid ]] && mv__pid_alive "$(cat "$dir/smtp-sink.pid")"; then
    mv__err "smtp_sink_start: one already runs for $dir"
    return 1
  fi
  mv__make_traversable "$dir" || return 1
  chown postfix "$dir" || return 1
  smtp-sink -u postfix -d "$dir/msg." "$@" "127.0.0.1:$port" 100 >>"$dir/smtp-sink.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/smtp-sink.pid"
  if ! wait_port "$port" "${MV_START_TIMEOUT:-15}" || ! mv__pid_alive "$pid"; then
    mv__err "smtp_sink_start: smtp-sink did not come up on 127.0.0.1:$port"
    mv__tail_log "$dir/smtp-sink.log"
    kill "$pid" 2>/dev/null
    return 1
  fi
}

# smtp_sink_stop DIR: stops the smtp-sink started for DIR; true if none ran.
smtp_sink_stop() {
  (($# == 1)) || { mv__err "usage: smtp_sink_stop DIR"; return 2; }
  local pid
  [[ -r $1/smtp-sink.pid ]] || return 0
  pid=$(cat "$1/smtp-sink.pid")
  rm -f "$1/smtp-sink.pid"
  mv__pid_alive "$pid" || return 0
  kill "$pid" 2>/dev/null
  local deadline=$((SECONDS + ${MV_STOP_TIMEOUT:-10}))
  while mv__pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      mv__err "smtp_sink_stop: smtp-sink $pid did not exit; killing it"
      kill -9 "$pid" 2>/dev/null
      return 1
    fi
    sleep 0.05
  done
}

########################################################################################
# Postfix
########################################################################################

# Users whose recipient_bcc mapping is written in recipient_bcc mode (all @example.test).
MV_POSTFIX_BCC_USERS=${MV_POSTFIX_BCC_USERS:-"alice bob carol"}

postfix_log() { echo "$1/log/postfix.log"; }

mv__postfix_master_pid() {
  local f="$1/queue/pid/master.pid" pid
  [[ -r $f ]] || return 1
  read -r pid <"$f" || return 1
  pid=${pid//[[:space:]]/}
  [[ -n $pid ]] && mv__pid_alive "$pid" && echo "$pid"
}

# postfix_start DIR LISTEN_PORT JOURNAL_PORT MODE
#
# A private Postfix instance: config DIR/etc (main.cf, master.cf, maps), queue DIR/queue,
# data DIR/data, log DIR/log/postfix.log (postlogd; no syslog needed). smtpd listens on
# 127.0.0.1:LISTEN_PORT only; myhostname postfix.test; mydestination empty; it relays for
# example.test, where every recipient is delivered by discard:; journal.test goes to
# smtp:[127.0.0.1]:JOURNAL_PORT. MODE:
#   always_bcc     always_bcc = archive@journal.test
#   recipient_bcc  recipient_bcc_maps = texthash:DIR/etc/recipient_bcc, mapping
#                  USER@example.test to archive+USER=example.test@journal.test for each USER
#                  in $MV_POSTFIX_BCC_USERS (default "alice bob carol")
# Deferred mail is retried about every second (queue_run_delay, minimal/maximal_backoff_time
# 1s/2s), so a capture server that refuses or answers 4xx sees the retry within ~2 s.
# MV_POSTFIX_JOURNAL_PROTO=lmtp sends journal.test to lmtp:inet:127.0.0.1:JOURNAL_PORT instead.
# Extra main.cf lines can be given in $MV_POSTFIX_EXTRA_MAIN_CF (e.g. "soft_bounce = yes",
# "smtp_destination_concurrency_limit = 1", one per line); they replace the defaults above.
# Maps are texthash: after editing one, run `postfix -c DIR/etc reload`.
# Calling it again on the same DIR after postfix_stop rewrites the config and keeps the
# queue (and log), so a restart picks up queued mail.
#
# What the capture server sees (checked with smtp-sink): one transaction per journal copy,
# MAIL FROM:<original sender>, and for the BCC recipient
#   RCPT TO:<archive@journal.test> ORCPT=rfc822;archive@journal.test NOTIFY=NEVER
#   RCPT TO:<archive+alice=example.test@journal.test> ORCPT=rfc822;archive+2Balice+3Dexample.test@journal.test NOTIFY=NEVER
# (Postfix adds BCC recipients with NOTIFY=NEVER; ORCPT is xtext, "+" -> "+2B", "=" -> "+3D";
# Postfix sends these DSN parameters only to a server that announces DSN in its EHLO reply).
# Up to smtp_destination_concurrency_limit (20) connections may reach the capture server at
# once. Log lines say "postfix postfix/smtp[...]: ...", in DIR/log/postfix.log.
postfix_start() {
  if (($# != 4)); then
    mv__err "usage: postfix_start DIR LISTEN_PORT JOURNAL_PORT always_bcc|recipient_bcc"
    return 2
  fi
  local dir listen=$2 journal=$3 mode=$4 pid i
  mv__is_port "$listen" || { mv__err "postfix_start: bad LISTEN_PORT '$listen'"; return 2; }
  mv__is_port "$journal" || { mv__err "postfix_start: bad JOURNAL_PORT '$journal'"; return 2; }
  case $mode in
    always_bcc | recipient_bcc) ;;
    *) mv__err "postfix_start: MODE must be always_bcc or recipient_bcc, not '$mode'"; return 2 ;;
  esac
  ((EUID == 0)) || { mv__err "postfix_start: needs root (the Postfix master starts as root)"; return 1; }
  command -v postfix >/dev/null || { mv__err "postfix_start: postfix is not installed"; return 1; }
  dir=$(mv__absdir "$1") || return 1
  if pid=$(mv__postfix_master_pid "$dir"); then
    mv__err "postfix_start: an instance already runs in $dir (master pid $pid)"
    return 1
  fi
  if mv__port_listening "$listen"; then
    mv__err "postfix_start: 127.0.0.1:$listen is already in use"
    return 1
  fi

  # The queue directory (and its parents) must be owned by root and not writable by others;
  # post-install (run by `postfix start`) creates the subdirectories with the right owners.
  mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/log" || return 1
  chown root:root "$dir/etc" "$dir/queue" "$dir/log"
  chmod 755 "$dir/etc" "$dir/queue" "$dir/log"
  # the master's lock file lives in data_directory, which must belong to mail_owner
  chown postfix:postfix "$dir/data" && chmod 700 "$dir/data"
  mv__make_traversable "$dir" || return 1
  touch "$dir/log/postfix.log"   # appended to across restarts

  cat >"$dir/etc/main.cf" <<EOF
# Private test instance written by tests/capture/servers.sh ($mode).
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $dir/log/postfix.log
maillog_file_prefixes = $dir/log
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
transport_maps = texthash:$dir/etc/transport
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
smtpd_banner = \$myhostname ESMTP postfix-test
smtpd_peername_lookup = no
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtp_connect_timeout = 5s
# retry refused / 4xx deliveries within seconds
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
EOF
  if [[ $mode == always_bcc ]]; then
    echo "always_bcc = archive@journal.test" >>"$dir/etc/main.cf"
  else
    echo "recipient_bcc_maps = texthash:$dir/etc/recipient_bcc" >>"$dir/etc/main.cf"
  fi
  # extra settings replace ours in place (postconf -e), so Postfix logs no "overriding" warnings
  local line
  while IFS= read -r line; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    postconf -c "$dir/etc" -e "$line" ||
      { mv__err "postfix_start: bad MV_POSTFIX_EXTRA_MAIN_CF line '$line'"; return 2; }
  done <<<"${MV_POSTFIX_EXTRA_MAIN_CF:-}"

  local nexthop
  case ${MV_POSTFIX_JOURNAL_PROTO:-smtp} in
    smtp) nexthop="smtp:[127.0.0.1]:$journal" ;;
    lmtp) nexthop="lmtp:inet:127.0.0.1:$journal" ;;
    *) mv__err "postfix_start: MV_POSTFIX_JOURNAL_PROTO must be smtp or lmtp"; return 2 ;;
  esac
  cat >"$dir/etc/transport" <<EOF
example.test    discard:example.test is discarded by the test instance
journal.test    $nexthop
EOF
  local u
  : >"$dir/etc/recipient_bcc"
  for u in $MV_POSTFIX_BCC_USERS; do
    echo "$u@example.test  archive+$u=example.test@journal.test" >>"$dir/etc/recipient_bcc"
  done

  # No chroot (a private queue directory would need /etc files copied into it) and no tlsmgr.
  cat >"$dir/etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$listen inet n   -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

  # `postfix start` stalls 2 s when main.cf is less than a second or two old (it waits out
  # the mtime granularity); the files are ours and complete, so date them back.
  touch -d '-10 seconds' "$dir/etc/main.cf" "$dir/etc/master.cf" "$dir/etc/transport" "$dir/etc/recipient_bcc"
  if ! postfix -c "$dir/etc" start >"$dir/log/start.out" 2>&1; then
    mv__err "postfix_start: 'postfix -c $dir/etc start' failed:"
    sed 's/^/  | /' "$dir/log/start.out" >&2
    mv__tail_log "$dir/log/postfix.log"
    return 1
  fi
  if ! wait_port "$listen" "${MV_START_TIMEOUT:-15}"; then
    mv__err "postfix_start: smtpd did not come up on 127.0.0.1:$listen"
    mv__tail_log "$dir/log/postfix.log"
    postfix -c "$dir/etc" stop >/dev/null 2>&1
    return 1
  fi
  return 0
}

# postfix_stop DIR: stops the instance and waits for its master to exit; true if none ran.
postfix_stop() {
  (($# == 1)) || { mv__err "usage: postfix_stop DIR"; return 2; }
  local dir=$1 pid
  pid=$(mv__postfix_master_pid "$dir") || return 0
  mv__stop_master "postfix_stop $dir" "$pid" "$dir/log/postfix.log" postfix -c "$dir/etc" stop
}

# postfix_queue_empty DIR: true when no message is in maildrop, incoming, active, deferred
# or hold (files are counted directly; no showq, so it works with the instance stopped too).
postfix_queue_empty() {
  (($# == 1)) || { mv__err "usage: postfix_queue_empty DIR"; return 2; }
  local q="$1/queue" n
  [[ -d $q ]] || { mv__err "postfix_queue_empty: no queue directory $q"; return 2; }
  n=$(find "$q/maildrop" "$q/incoming" "$q/active" "$q/deferred" "$q/hold" -type f 2>/dev/null | wc -l)
  ((n == 0))
}

# postfix_wait_queue_empty DIR [SECONDS=30]: waits for the queue to drain; on timeout prints
# the queue (postqueue -p) and the log's tail.
postfix_wait_queue_empty() {
  local dir=$1 secs=${2:-30} deadline
  deadline=$((SECONDS + secs))
  while ! postfix_queue_empty "$dir"; do
    if ((SECONDS >= deadline)); then
      mv__err "postfix_wait_queue_empty: queue of $dir not empty after ${secs}s:"
      postqueue -c "$dir/etc" -p 2>&1 | sed 's/^/  | /' >&2
      mv__tail_log "$dir/log/postfix.log"
      return 1
    fi
    sleep 0.1
  done
}

# postfix_flush DIR: asks the instance to retry all deferred mail now (postqueue -f).
postfix_flush() {
  (($# == 1)) || { mv__err "usage: postfix_flush DIR"; return 2; }
  postqueue -c "$1/etc" -f || { mv__err "postfix_flush: postqueue -c $1/etc -f failed"; return 1; }
}

########################################################################################
# Dovecot
########################################################################################

# Master user for IMAP (log in as "USER*MASTER" with the master password; see below).
MV_DOVECOT_MASTER_USER=${MV_DOVECOT_MASTER_USER:-mvmaster}
MV_DOVECOT_MASTER_PASS=${MV_DOVECOT_MASTER_PASS:-mvmaster-secret}
# Password every ordinary user logs in with over IMAP.
MV_DOVECOT_USER_PASS=${MV_DOVECOT_USER_PASS:-mvtest}

dovecot_log() { echo "$1/log/dovecot.log"; }

mv__dovecot_master_pid() {
  local f="$1/run/master.pid" pid
  [[ -r $f ]] || return 1
  read -r pid <"$f" || return 1
  [[ -n $pid ]] && mv__pid_alive "$pid" && echo "$pid"
}

# dovecot_lmtp_start DIR PORT [IMAP_PORT]
#
# A private Dovecot: config DIR/dovecot.conf (nothing from /etc/dovecot), base_dir DIR/run,
# state_dir DIR/state, log DIR/log/dovecot.log. LMTP on 127.0.0.1:PORT. Mail is stored as
# user mvtest (created if missing) in maildir:DIR/mail/%u (%u = the full recipient, e.g.
# DIR/mail/alice@example.test/new/...); home DIR/home/%u. userdb: passwd-file DIR/users
# (empty unless the test writes entries; its uid/gid are forced to mvtest) then static with
# allow_all_users=yes, so any recipient is accepted. recipient_delimiter is "+" and
# lmtp_save_to_detail_mailbox = no: mail to user+detail@d goes to INBOX of user@d. fsync
# settings are Dovecot's defaults (mail_fsync = optimized: each delivery is fsynced before
# LMTP answers 250).
#
# With IMAP_PORT, IMAP listens on 127.0.0.1:IMAP_PORT (plaintext, no TLS). Logins:
#   any user, password $MV_DOVECOT_USER_PASS (default mvtest);
#   master user: "USER*$MV_DOVECOT_MASTER_USER" with password $MV_DOVECOT_MASTER_PASS
#   (defaults mvmaster / mvmaster-secret), e.g. a01 LOGIN alice@example.test*mvmaster mvmaster-secret
#   logs in as alice@example.test.
# Extra settings can be appended via $MV_DOVECOT_EXTRA_CONF.
dovecot_lmtp_start() {
  if (($# < 2 || $# > 3)); then
    mv__err "usage: dovecot_lmtp_start DIR LMTP_PORT [IMAP_PORT]"
    return 2
  fi
  local dir port=$2 imap_port=${3:-} pid uid gid protocols=lmtp
  mv__is_port "$port" || { mv__err "dovecot_lmtp_start: bad LMTP port '$port'"; return 2; }
  if [[ -n $imap_port ]]; then
    mv__is_port "$imap_port" || { mv__err "dovecot_lmtp_start: bad IMAP port '$imap_port'"; return 2; }
    protocols="lmtp imap"
  fi
  ((EUID == 0)) || { mv__err "dovecot_lmtp_start: needs root (Dovecot's master starts as root)"; return 1; }
  command -v dovecot >/dev/null || { mv__err "dovecot_lmtp_start: dovecot is not installed"; return 1; }
  [[ -x /usr/lib/dovecot/lmtp ]] || { mv__err "dovecot_lmtp_start: dovecot-lmtpd is not installed"; return 1; }
  if [[ -n $imap_port && ! -x /usr/lib/dovecot/imap ]]; then
    mv__err "dovecot_lmtp_start: dovecot-imapd is not installed"
    return 1
  fi
  dir=$(mv__absdir "$1") || return 1
  if pid=$(mv__dovecot_master_pid "$dir"); then
    mv__err "dovecot_lmtp_start: an instance already runs in $dir (master pid $pid)"
    return 1
  fi
  local p
  for p in $port $imap_port; do
    if mv__port_listening "$p"; then
      mv__err "dovecot_lmtp_start: 127.0.0.1:$p is already in use"
      return 1
    fi
  done
  mv_ensure_test_user || return 1
  uid=$(id -u "$MV_TEST_USER") && gid=$(id -g "$MV_TEST_USER") || return 1

  mkdir -p "$dir/run" "$dir/state" "$dir/log" "$dir/mail" "$dir/home" || return 1
  # mvtest must reach DIR/mail and DIR/home through DIR (mktemp -d makes DIR 0700).
  mv__make_traversable "$dir" || return 1
  chown "$uid:$gid" "$dir/mail" "$dir/home"
  chmod 755 "$dir/run"
  if ! runuser -u "$MV_TEST_USER" -- test -w "$dir/mail"; then
    mv__err "dovecot_lmtp_start: user $MV_TEST_USER cannot write $dir/mail (a parent directory not searchable?)"
    return 1
  fi
  [[ -e $dir/users ]] || : >"$dir/users"
  printf '%s:{PLAIN}%s::::::\n' "$MV_DOVECOT_MASTER_USER" "$MV_DOVECOT_MASTER_PASS" >"$dir/master-users"
  chown root:dovecot "$dir/users" "$dir/master-users" 2>/dev/null
  chmod 640 "$dir/users" "$dir/master-users"
  touch "$dir/log/dovecot.log"   # appended to across restarts

  local imap_service=""
  if [[ -n $imap_port ]]; then
    imap_service="service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    port = 0
  }
}"
  fi

  cat >"$dir/dovecot.conf" <<EOF
# Private test instance written by tests/capture/servers.sh.
instance_name = mvtest-$(basename "$dir")
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/log/dovecot.log
protocols = $protocols
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
first_valid_uid = $uid
last_valid_uid = $uid
first_valid_gid = $gid
last_valid_gid = $gid
mail_location = maildir:$dir/mail/%u
mail_uid = $uid
mail_gid = $gid
lmtp_save_to_detail_mailbox = no
recipient_delimiter = +
postmaster_address = postmaster@dovecot.test
hostname = dovecot.test

passdb {
  driver = passwd-file
  master = yes
  args = $dir/master-users
}
passdb {
  driver = static
  args = password=$MV_DOVECOT_USER_PASS
}
userdb {
  driver = passwd-file
  args = $dir/users
  override_fields = uid=$uid gid=$gid home=$dir/home/%u
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$dir/home/%u allow_all_users=yes
}

service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $port
  }
}
$imap_service
${MV_DOVECOT_EXTRA_CONF:-}
EOF

  if ! doveconf -c "$dir/dovecot.conf" -n >"$dir/log/doveconf.out" 2>&1; then
    mv__err "dovecot_lmtp_start: doveconf rejects $dir/dovecot.conf:"
    sed 's/^/  | /' "$dir/log/doveconf.out" >&2
    return 1
  fi
  if ! dovecot -c "$dir/dovecot.conf" >"$dir/log/start.out" 2>&1; then
    mv__err "dovecot_lmtp_start: 'dovecot -c $dir/dovecot.conf' failed:"
    sed 's/^/  | /' "$dir/log/start.out" >&2
    mv__tail_log "$dir/log/dovecot.log"
    return 1
  fi
  for p in $port $imap_port; do
    if ! wait_port "$p" "${MV_START_TIMEOUT:-15}"; then
      mv__err "dovecot_lmtp_start: Dovecot did not come up on 127.0.0.1:$p"
      mv__tail_log "$dir/log/dovecot.log"
      dovecot_stop "$dir" >/dev/null 2>&1
      return 1
    fi
  done
  return 0
}

# dovecot_stop DIR: stops the instance and waits for its master to exit; true if none ran.
dovecot_stop() {
  (($# == 1)) || { mv__err "usage: dovecot_stop DIR"; return 2; }
  local dir=$1 pid
  pid=$(mv__dovecot_master_pid "$dir") || return 0
  # SIGTERM, as `doveadm stop` does; doveadm then polls with kill(pid, 0), which on a machine
  # whose PID 1 reaps late keeps it waiting for the zombie (~2.7 s here).
  mv__stop_master "dovecot_stop $dir" "$pid" "$dir/log/dovecot.log" kill -TERM "$pid"
}
