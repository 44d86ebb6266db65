#!/usr/bin/env bash
# Installs what the recovery tests need besides Dovecot: Cyrus IMAP (to run private instances
# with tests/recovery/servers.sh) and isync's mbsync (the benchmark peer). Idempotent; meant
# to be called from scripts/install-deps.sh, as root or with sudo.
#
# Cyrus next to Dovecot: Debian's cyrus-imapd and dovecot-imapd both Provide and Conflict
# with imap-server, so installing cyrus-imapd would remove dovecot-imapd. cyrus-imapd holds
# only /usr/lib/cyrus/bin/{imapd,idled,squatter}; the master, ctl_cyrusdb and the libraries
# are in cyrus-common, which does not conflict. So: apt installs cyrus-common, and
# cyrus-imapd's .deb (the same version, fetched with apt-get download) is unpacked, not
# installed, into $MV_CYRUS_UNPACKED (default /opt/mailvault-test/cyrus-imapd).
#
# cyrus-common depends on default-mta | mail-transport-agent: install it together with
# postfix (or after it), else apt picks exim4-daemon-light. Its only debconf question,
# cyrus-common/removespools, is asked on purge; it is preseeded to false here anyway.
# On a systemd machine cyrus-common enables and starts cyrus-imapd.service (the system
# instance, /etc/imapd.conf) and sasl2-bin may start saslauthd; the tests need neither, so
# the ones this run installed are disabled and stopped (as scripts/install-deps.sh does for
# postfix and dovecot).
set -euo pipefail

dest=${MV_CYRUS_UNPACKED:-/opt/mailvault-test/cyrus-imapd}
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"

packages=(cyrus-common sasl2-bin isync)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  echo "cyrus-common cyrus-common/removespools boolean false" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ -d /run/systemd/system ]]; then
    for p in "${missing[@]}"; do
      case $p in
        cyrus-common) $sudo systemctl disable --now cyrus-imapd >/dev/null 2>&1 || true ;;
        sasl2-bin) $sudo systemctl disable --now saslauthd >/dev/null 2>&1 || true ;;
      esac
    done
  fi
fi

# imapd: from an installed cyrus-imapd (then dovecot-imapd is gone), or unpacked here.
if [[ -x /usr/lib/cyrus/bin/imapd ]]; then
  exit 0
fi
version=$(dpkg-query -W -f='${Version}' cyrus-common)
stamp="$dest/.version"
if [[ -x $dest/usr/lib/cyrus/bin/imapd && -r $stamp && $(cat "$stamp") == "$version" ]]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
chown _apt "$tmp" 2>/dev/null || true   # apt-get download drops to _apt when it can
cd "$tmp"
if ! $sudo apt-get download -qq "cyrus-imapd=$version" 2>/dev/null; then
  $sudo apt-get update -qq
  $sudo apt-get download -qq "cyrus-imapd=$version"
fi
cd - >/dev/null
deb=$(ls "$tmp"/cyrus-imapd_*.deb)
$sudo rm -rf "$dest"
$sudo mkdir -p "$dest"
$sudo dpkg-deb -x "$deb" "$dest"
echo "$version" | $sudo tee "$stamp" >/dev/null
echo "unpacked cyrus-imapd $version into $dest"
