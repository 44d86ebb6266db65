# shellcheck shell=bash
# Real IMAP servers on 127.0.0.1 for the tests of mailvault's recovery (restore over IMAP):
# a private Cyrus IMAP and a private Dovecot, each inside its own directory. Source this file;
# it defines functions only. It sources ../capture/servers.sh (free_port, wait_port,
# dovecot_lmtp_start, dovecot_stop, ...), so those are defined too. Every function prints a
# clear error to stderr and returns non-zero on failure. Starting servers needs root.
#
#   imap_tool ARGS...                       python3 tests/recovery/imap_tool.py ARGS...
#
#   cyrus_start DIR PORT                    private Cyrus IMAP on 127.0.0.1:PORT (see below)
#   cyrus_stop DIR                          stop it (waits for the master to exit)
#   cyrus_restart DIR                       stop, then start again on the same port, same data
#   cyrus_port DIR                          print its IMAP port
#   cyrus_add_user DIR USER PASSWORD        SASL password + mailbox user/USER (server running)
#   cyrus_set_quota DIR USER KB|none        STORAGE quota of user/USER, in KiB
#   cyrus_count DIR USER [FOLDER=INBOX]     print how many messages FOLDER of USER holds
#   cyrus_imapd_path                        print the imapd binary used (see "Installing")
#
#   dovecot_imap_start DIR IMAP_PORT [LMTP_PORT]
#                                           dovecot_lmtp_start plus the quota plugin, no auth
#                                           failure delay/penalty (see below)
#   dovecot_restart DIR                     stop and start again with the same config and data
#   dovecot_imap_port DIR                   print its IMAP port
#   dovecot_set_quota DIR USER KB|none      STORAGE quota of USER, in KiB (new sessions)
#   dovecot_count DIR USER [FOLDER=INBOX]   print how many messages FOLDER of USER holds
#   dovecot_doveadm DIR ARGS...             doveadm -c DIR/dovecot.conf ARGS...
#
# Logins:
#   Cyrus: users as added by cyrus_add_user; admin $MV_CYRUS_ADMIN / $MV_CYRUS_ADMIN_PASS
#   (mvadmin / mvadmin-secret). The admin acts as a user with SASL PLAIN and an authorization
#   identity: AUTHENTICATE PLAIN base64("alice@example.test\0mvadmin\0mvadmin-secret"),
#   i.e. `imap_tool --user mvadmin --password mvadmin-secret --authzid alice@example.test`.
#   Dovecot: every user with $MV_DOVECOT_USER_PASS (mvtest); master user: LOGIN
#   "alice@example.test*mvmaster" mvmaster-secret, or AUTHENTICATE PLAIN with authzid
#   alice@example.test, authcid mvmaster (see ../capture/servers.sh).
#
# Installing Cyrus next to Dovecot: Debian's cyrus-imapd and dovecot-imapd both Provide and
# Conflict with imap-server, so apt removes dovecot-imapd when cyrus-imapd is installed. The
# package cyrus-imapd holds only imapd (plus idled, squatter); everything else (master,
# ctl_cyrusdb, lmtpd, ...) is in cyrus-common. So install cyrus-common (+ sasl2-bin for
# saslpasswd2) with apt and unpack cyrus-imapd's .deb without installing it:
# tests/recovery/install-cyrus.sh does that (into /opt/mailvault-test/cyrus-imapd).
# cyrus_imapd_path finds imapd in $MV_CYRUS_IMAPD, that directory, or /usr/lib/cyrus/bin.
#
# Cyrus logs only to syslog (there is no /dev/log on the test machines, so nothing is kept).
# For a protocol trace of one user, create DIR/conf/log/USER (owned by cyrus) before the
# session: imapd then writes the session's traffic to a file there ("telemetry").

MV_RECOVERY_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../capture/servers.sh
source "$MV_RECOVERY_DIR/../capture/servers.sh"

MV_CYRUS_ADMIN=${MV_CYRUS_ADMIN:-mvadmin}
MV_CYRUS_ADMIN_PASS=${MV_CYRUS_ADMIN_PASS:-mvadmin-secret}
# servername: also the SASL realm of logins without "@domain"
MV_CYRUS_SERVERNAME=${MV_CYRUS_SERVERNAME:-cyrus.test}
MV_CYRUS_UNPACKED=${MV_CYRUS_UNPACKED:-/opt/mailvault-test/cyrus-imapd}
MV_CYRUS_BIN=${MV_CYRUS_BIN:-/usr/lib/cyrus/bin}

imap_tool() { python3 "$MV_RECOVERY_DIR/imap_tool.py" "$@"; }

# mbsync_push_rc RC MAILDIR USER PORT: an mbsync config pushing MAILDIR into USER's INBOX on
# the Dovecot at 127.0.0.1:PORT (the benchmark peer of the restore; the blank lines matter).
mbsync_push_rc() {
  cat >"$1" <<EOF
IMAPAccount dovecot
Host 127.0.0.1
Port $4
User $3
Pass $MV_DOVECOT_USER_PASS
SSLType None
AuthMechs LOGIN

IMAPStore far
Account dovecot

MaildirStore near
Path $2/
Inbox $2

Channel push
Far :far:
Near :near:
Patterns INBOX
Sync Push
Create Far
Expunge None
SyncState *
EOF
}

########################################################################################
# Cyrus IMAP
########################################################################################

cyrus_imapd_path() {
  local p
  for p in "${MV_CYRUS_IMAPD:-}" "$MV_CYRUS_UNPACKED/usr/lib/cyrus/bin/imapd" "$MV_CYRUS_BIN/imapd"; do
    [[ -n $p && -x $p ]] && { echo "$p"; return 0; }
  done
  mv__err "cyrus: no imapd found (MV_CYRUS_IMAPD, $MV_CYRUS_UNPACKED, $MV_CYRUS_BIN); run tests/recovery/install-cyrus.sh"
  return 1
}

mv__cyrus_master_pid() {
  local f="$1/run/master.pid" pid
  [[ -r $f ]] || return 1
  read -r pid <"$f" || return 1
  pid=${pid//[[:space:]]/}
  [[ -n $pid ]] && mv__pid_alive "$pid" && echo "$pid"
}

cyrus_port() {
  (($# == 1)) || { mv__err "usage: cyrus_port DIR"; return 2; }
  [[ -r $1/port ]] || { mv__err "cyrus_port: no Cyrus was started in $1"; return 1; }
  cat "$1/port"
}

# Mailbox name of USER's INBOX as the admin sees it (unixhierarchysep: yes, virtdomains:
# userid): user/alice@example.test, user/bob.
mv__cyrus_mbox() { echo "user/$1"; }

# cyrus_start DIR PORT
#
# A private Cyrus IMAP 3.6: imapd.conf and cyrus.conf in DIR (nothing from /etc/imapd.conf
# or /etc/cyrus.conf, which the Debian package's service uses), configdirectory DIR/conf,
# partition DIR/spool, sockets under DIR/conf/socket, locks/proc/pid under DIR/run, what the
# master and its children print in DIR/log/master.log (Cyrus logs to syslog otherwise). The
# master runs in the foreground (-D) under setsid, starts as root and drops to user cyrus.
# Only imapd runs, on 127.0.0.1:PORT; no LMTP, POP, sieve, HTTP. $MV_CYRUS_EXTRA_CONF lines
# ("option: value") replace or add imapd.conf options (Cyrus refuses an option set twice).
# Settings that matter to tests: allowplaintext (LOGIN without TLS), SASL PLAIN/LOGIN
# checked against the sasldb DIR/sasldb2 (sasl_pwcheck_method auxprop), admins
# $MV_CYRUS_ADMIN, virtdomains: userid (alice@example.test is user alice in domain
# example.test), unixhierarchysep: yes ("/" separator, dots allowed in names),
# munge8bit: no (else Cyrus turns 8-bit header bytes into "X", on APPEND too),
# failedloginpause: 0 (default 3 s after each failed login).
# Calling it again after cyrus_stop keeps the data (same DIR and PORT: use cyrus_restart).
cyrus_start() {
  if (($# != 2)); then
    mv__err "usage: cyrus_start DIR PORT"
    return 2
  fi
  local dir port=$2 pid imapd bin=$MV_CYRUS_BIN
  mv__is_port "$port" || { mv__err "cyrus_start: bad port '$port'"; return 2; }
  ((EUID == 0)) || { mv__err "cyrus_start: needs root (the master starts as root, drops to cyrus)"; return 1; }
  [[ -x $bin/master && -x $bin/ctl_cyrusdb ]] ||
    { mv__err "cyrus_start: cyrus-common is not installed ($bin/master missing)"; return 1; }
  command -v saslpasswd2 >/dev/null || { mv__err "cyrus_start: saslpasswd2 (sasl2-bin) is not installed"; return 1; }
  id -u cyrus >/dev/null 2>&1 || { mv__err "cyrus_start: user cyrus is missing (cyrus-common creates it)"; return 1; }
  imapd=$(cyrus_imapd_path) || return 1
  dir=$(mv__absdir "$1") || return 1
  if pid=$(mv__cyrus_master_pid "$dir"); then
    mv__err "cyrus_start: an instance already runs in $dir (master pid $pid)"
    return 1
  fi
  if mv__port_listening "$port"; then
    mv__err "cyrus_start: 127.0.0.1:$port is already in use"
    return 1
  fi
  # imapd binds {configdirectory}/socket/idle.PID, whatever idlesocket says
  mkdir -p "$dir/conf/socket" "$dir/spool" "$dir/run/lock" "$dir/run/proc" "$dir/log" || return 1
  chown -R cyrus:mail "$dir/conf" "$dir/spool" "$dir/run" "$dir/log" || return 1
  chmod 750 "$dir/conf" "$dir/spool"
  mv__make_traversable "$dir" || return 1
  echo "$port" >"$dir/port"

  cat >"$dir/imapd.conf" <<EOF
# Private test instance written by tests/recovery/servers.sh.
configdirectory: $dir/conf
defaultpartition: default
partition-default: $dir/spool
proc_path: $dir/run/proc
mboxname_lockpath: $dir/run/lock
lmtpsocket: $dir/conf/socket/lmtp
idlesocket: $dir/conf/socket/idle
notifysocket: $dir/conf/socket/notify
servername: $MV_CYRUS_SERVERNAME
syslog_prefix: mvtest-cyrus
admins: $MV_CYRUS_ADMIN
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: $dir/sasldb2
sasl_mech_list: PLAIN LOGIN
virtdomains: userid
unixhierarchysep: yes
altnamespace: no
munge8bit: no
failedloginpause: 0
hashimapspool: true
umask: 077
EOF
  # Cyrus refuses a config that sets an option twice, so extra lines replace ours.
  local line key
  while IFS= read -r line; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    [[ $line =~ ^([a-z0-9_-]+):[[:space:]] ]] ||
      { mv__err "cyrus_start: bad MV_CYRUS_EXTRA_CONF line '$line' (want 'option: value')"; return 2; }
    key=${BASH_REMATCH[1]}
    sed -i "/^$key:/d" "$dir/imapd.conf"
    echo "$line" >>"$dir/imapd.conf"
  done <<<"${MV_CYRUS_EXTRA_CONF:-}"
  # master does not pass -C on to the programs it starts: without -C in each cmd they read
  # /etc/imapd.conf and use the system's /var/lib/cyrus.
  cat >"$dir/cyrus.conf" <<EOF
# Private test instance written by tests/recovery/servers.sh.
START {
  recover cmd="$bin/ctl_cyrusdb -C $dir/imapd.conf -r"
}
SERVICES {
  imap cmd="$imapd -C $dir/imapd.conf" listen="127.0.0.1:$port" prefork=0 maxchild=50
}
EVENTS {
  checkpoint cmd="$bin/ctl_cyrusdb -C $dir/imapd.conf -c" period=30
}
EOF
  if [[ ! -e $dir/sasldb2 ]]; then
    printf '%s' "$MV_CYRUS_ADMIN_PASS" |
      saslpasswd2 -p -c -f "$dir/sasldb2" -u "$MV_CYRUS_SERVERNAME" "$MV_CYRUS_ADMIN" ||
      { mv__err "cyrus_start: saslpasswd2 failed"; return 1; }
  fi
  chown root:mail "$dir/sasldb2" && chmod 640 "$dir/sasldb2"
  touch "$dir/log/master.log"   # appended to across restarts

  # In the foreground with -D (stdio kept) in a session of its own, so that what the master
  # and its children print, e.g. "fatal error: option 'x' was specified twice in config
  # file", lands in DIR/log/master.log; with -d (daemon) it would go to syslog only.
  setsid "$bin/master" -C "$dir/imapd.conf" -M "$dir/cyrus.conf" -p "$dir/run/master.pid" -D \
    </dev/null >>"$dir/log/master.log" 2>&1 &
  local spid=$! deadline=$((SECONDS + ${MV_START_TIMEOUT:-15}))
  until mv__port_listening "$port" && mv__cyrus_master_pid "$dir" >/dev/null; do
    if ! mv__pid_alive "$spid" || ((SECONDS >= deadline)); then
      mv__err "cyrus_start: Cyrus did not come up on 127.0.0.1:$port"
      mv__tail_log "$dir/log/master.log"
      mv__pid_alive "$spid" && kill "$spid" 2>/dev/null
      return 1
    fi
    sleep 0.05
  done
}

# cyrus_stop DIR: SIGTERM to the master (which ends its children), waits; true if none ran.
cyrus_stop() {
  (($# == 1)) || { mv__err "usage: cyrus_stop DIR"; return 2; }
  local dir=$1 pid
  pid=$(mv__cyrus_master_pid "$dir") || return 0
  mv__stop_master "cyrus_stop $dir" "$pid" "$dir/log/master.log" kill -TERM "$pid" || return 1
  rm -f "$dir/run/master.pid"
}

cyrus_restart() {
  (($# == 1)) || { mv__err "usage: cyrus_restart DIR"; return 2; }
  local port
  port=$(cyrus_port "$1") || return 1
  cyrus_stop "$1" || return 1
  cyrus_start "$1" "$port"
}

# cyrus_add_user DIR USER PASSWORD: sets USER's password in DIR/sasldb2 (USER@DOMAIN goes in
# realm DOMAIN, a bare USER in realm $MV_CYRUS_SERVERNAME) and, as the admin, creates the
# mailbox user/USER (its INBOX). The instance must run. An existing mailbox is kept.
cyrus_add_user() {
  (($# == 3)) || { mv__err "usage: cyrus_add_user DIR USER PASSWORD"; return 2; }
  local dir=$1 user=$2 pass=$3 name realm port res
  [[ $user =~ ^[A-Za-z0-9._+-]+(@[A-Za-z0-9.-]+)?$ ]] || { mv__err "cyrus_add_user: bad user '$user'"; return 2; }
  if [[ $user == *@* ]]; then
    name=${user%@*} realm=${user#*@}
  else
    name=$user realm=$MV_CYRUS_SERVERNAME
  fi
  printf '%s' "$pass" | saslpasswd2 -p -c -f "$dir/sasldb2" -u "$realm" "$name" ||
    { mv__err "cyrus_add_user: saslpasswd2 failed for $user"; return 1; }
  chown root:mail "$dir/sasldb2" && chmod 640 "$dir/sasldb2"
  port=$(cyrus_port "$dir") || return 1
  res=$(imap_tool --port "$port" --user "$MV_CYRUS_ADMIN" --password "$MV_CYRUS_ADMIN_PASS" \
    create-folder --folder "$(mv__cyrus_mbox "$user")")
  if [[ $? -ne 0 && $res != *"already exists"* ]]; then
    mv__err "cyrus_add_user: CREATE $(mv__cyrus_mbox "$user") failed: $res"
    return 1
  fi
  return 0
}

# cyrus_set_quota DIR USER KB|none: SETQUOTA user/USER (STORAGE KB); "none" removes it.
# Cyrus refuses an APPEND once usage + message size would exceed the limit:
#   tag NO Over quota            (Cyrus 3.6 sends no [OVERQUOTA] response code)
cyrus_set_quota() {
  (($# == 3)) || { mv__err "usage: cyrus_set_quota DIR USER KB|none"; return 2; }
  local port res
  port=$(cyrus_port "$1") || return 1
  res=$(imap_tool --port "$port" --user "$MV_CYRUS_ADMIN" --password "$MV_CYRUS_ADMIN_PASS" \
    set-quota --root "$(mv__cyrus_mbox "$2")" --kb "$3") ||
    { mv__err "cyrus_set_quota: SETQUOTA for $2 failed: $res"; return 1; }
}

cyrus_count() {
  (($# == 2 || $# == 3)) || { mv__err "usage: cyrus_count DIR USER [FOLDER]"; return 2; }
  local port res
  port=$(cyrus_port "$1") || return 1
  res=$(imap_tool --port "$port" --user "$MV_CYRUS_ADMIN" --password "$MV_CYRUS_ADMIN_PASS" \
    --authzid "$2" count --folder "${3:-INBOX}") || return 1
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["messages"])' "$res"
}

########################################################################################
# Dovecot, for recovery
########################################################################################

# dovecot_imap_start DIR IMAP_PORT [LMTP_PORT]
# dovecot_lmtp_start (../capture/servers.sh) with IMAP, on a free LMTP port unless given,
# plus: the quota plugin (count backend, per-user limits from DIR/users, see
# dovecot_set_quota; imap_quota for GETQUOTAROOT), auth_failure_delay = 0 and the anvil
# auth penalty off (by default a failed login is answered after 2 s, and further failures
# from 127.0.0.1 delay every login from there, even good ones, by 4, 8, up to 15 s).
# $MV_DOVECOT_EXTRA_CONF is still appended after these.
dovecot_imap_start() {
  if (($# < 2 || $# > 3)); then
    mv__err "usage: dovecot_imap_start DIR IMAP_PORT [LMTP_PORT]"
    return 2
  fi
  local lmtp=${3:-}
  [[ -n $lmtp ]] || lmtp=$(free_port) || return 1
  MV_DOVECOT_EXTRA_CONF="# tests/recovery/servers.sh
mail_plugins = \$mail_plugins quota
protocol imap {
  mail_plugins = \$mail_plugins imap_quota
}
plugin {
  quota = count:User quota
  quota_vsizes = yes
}
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${MV_DOVECOT_EXTRA_CONF:-}" dovecot_lmtp_start "$1" "$lmtp" "$2"
}

# Ports (LMTP, IMAP) in DIR/dovecot.conf.
mv__dovecot_ports() { awk '$1 == "port" && $2 == "=" && $3 > 0 { print $3 }' "$1/dovecot.conf"; }

dovecot_imap_port() {
  (($# == 1)) || { mv__err "usage: dovecot_imap_port DIR"; return 2; }
  awk '/inet_listener imap \{/ { f = 1 } f && $1 == "port" { print $3; exit }' "$1/dovecot.conf" |
    grep . || { mv__err "dovecot_imap_port: no IMAP listener in $1/dovecot.conf"; return 1; }
}

# dovecot_restart DIR: dovecot_stop, then starts the master again from the existing
# DIR/dovecot.conf (same ports, users file and mail) and waits for its listeners.
dovecot_restart() {
  (($# == 1)) || { mv__err "usage: dovecot_restart DIR"; return 2; }
  local dir=$1 p
  [[ -r $dir/dovecot.conf ]] || { mv__err "dovecot_restart: no $dir/dovecot.conf"; return 1; }
  dovecot_stop "$dir" || return 1
  if ! dovecot -c "$dir/dovecot.conf" >"$dir/log/start.out" 2>&1; then
    mv__err "dovecot_restart: 'dovecot -c $dir/dovecot.conf' failed:"
    sed 's/^/  | /' "$dir/log/start.out" >&2
    return 1
  fi
  for p in $(mv__dovecot_ports "$dir"); do
    wait_port "$p" "${MV_START_TIMEOUT:-15}" || { mv__tail_log "$dir/log/dovecot.log"; return 1; }
  done
}

dovecot_doveadm() {
  (($# >= 2)) || { mv__err "usage: dovecot_doveadm DIR ARGS..."; return 2; }
  local dir=$1
  shift
  doveadm -c "$dir/dovecot.conf" "$@"
}

# dovecot_set_quota DIR USER KB|none: (re)writes USER's line in the passwd-file userdb
# DIR/users as USER::UID:GID::::userdb_quota_rule=*:storage=KBk (Dovecot 2.3 returns an
# extra field of that file from a userdb lookup only with the userdb_ prefix, and only on a
# line with uid and gid). Applies to sessions that log in after it.
# Dovecot refuses an APPEND over the limit with
#   tag NO [OVERQUOTA] Quota exceeded (mailbox for user is full)
dovecot_set_quota() {
  (($# == 3)) || { mv__err "usage: dovecot_set_quota DIR USER KB|none"; return 2; }
  local dir=$1 user=$2 kb=$3 uid gid tmp
  [[ -e $dir/users ]] || { mv__err "dovecot_set_quota: no $dir/users (start the instance first)"; return 1; }
  [[ $kb == none || $kb =~ ^[0-9]+$ ]] || { mv__err "dovecot_set_quota: bad KB '$kb'"; return 2; }
  uid=$(id -u "$MV_TEST_USER") && gid=$(id -g "$MV_TEST_USER") || return 1
  tmp=$(mktemp "$dir/users.XXXXXX") || return 1
  awk -F: -v u="$user" '$1 != u' "$dir/users" >"$tmp"
  [[ $kb == none ]] || printf '%s::%s:%s::::userdb_quota_rule=*:storage=%sk\n' "$user" "$uid" "$gid" "$kb" >>"$tmp"
  chown root:dovecot "$tmp" 2>/dev/null
  chmod 640 "$tmp"
  # Dovecot re-reads the file when its mtime (whole seconds) changes: make sure it does...
  local old new
  old=$(stat -c %Y "$dir/users") new=$(stat -c %Y "$tmp")
  ((new > old)) || touch -d "@$((old + 1))" "$tmp"
  mv -f "$tmp" "$dir/users"
  # ... and it looks at the file at most once a second: a lookup within the second of an
  # earlier one would still see the old rule.
  sleep 1.05
}

# dovecot_count DIR USER [FOLDER=INBOX]: messages in FOLDER, counted with doveadm search
# (reads the mail store directly; the instance must run for the userdb lookup).
dovecot_count() {
  (($# == 2 || $# == 3)) || { mv__err "usage: dovecot_count DIR USER [FOLDER]"; return 2; }
  local out
  out=$(doveadm -c "$1/dovecot.conf" search -u "$2" mailbox "${3:-INBOX}" all 2>&1) ||
    { mv__err "dovecot_count: doveadm search failed: $out"; return 1; }
  if [[ -z $out ]]; then echo 0; else wc -l <<<"$out"; fi
}
