#!/usr/bin/env bash
# Installs Stoplight Prism, the validating proxy of the API test's spec phase (tests/api/api_test.sh,
# phase 8; tests/api/spec_proxy.py), from the npm registry into a cache directory: no global npm
# state, nothing under /usr. Idempotent and offline once installed: a complete install whose
# stamp matches tests/api/prism/package-lock.json is detected without touching the network.
#
#   tests/api/install-prism.sh            install if needed; prints the prism executable's path
#   tests/api/install-prism.sh --path     print where it is (or would be) installed, do nothing
#
# Where: ${MAILVAULT_PRISM_DIR:-${MAILVAULT_CACHE:-$HOME/.cache/mailvault}/prism}, with the
# executable at node_modules/.bin/prism. Versions: tests/api/prism/package.json pins
# @stoplight/prism-cli 5.14.2, the last release that runs on Debian 12's Node.js 18.20
# (5.15 and later want Node.js 24), and overrides its jsep to 1.4.0 (jsep 1.6 wants Node.js
# 20.16); package-lock.json fixes every other package with its sha512 (`npm ci`). To move to
# another version: edit package.json, `npm install --ignore-scripts` in a scratch copy of the
# folder, and copy the new package-lock.json back.
# Needs: node (>= 18.20.1) and npm, which scripts/install-deps.sh installs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
spec_dir=$here/prism
dest=${MAILVAULT_PRISM_DIR:-${MAILVAULT_CACHE:-$HOME/.cache/mailvault}/prism}
bin=$dest/node_modules/.bin/prism
want_version=$(sed -n 's/.*"@stoplight\/prism-cli": *"\([^"]*\)".*/\1/p' "$spec_dir/package.json" | head -n 1)

log() { printf 'install-prism: %s\n' "$*" >&2; }
die() { printf 'install-prism: error: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} == --path ]]; then
  printf '%s\n' "$bin"
  exit 0
fi
(($# == 0)) || die "usage: $0 [--path]"

stamp=$(cat "$spec_dir/package.json" "$spec_dir/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ -x $bin && -f $dest/.installed && $(cat "$dest/.installed") == "$stamp" ]]; then
  printf '%s\n' "$bin"
  exit 0
fi

command -v node >/dev/null || die "node not found (scripts/install-deps.sh installs nodejs)"
command -v npm >/dev/null || die "npm not found (scripts/install-deps.sh installs it)"
log "npm ci @stoplight/prism-cli@$want_version into $dest"
mkdir -p "$(dirname "$dest")"
build=$(mktemp -d "$dest.build.XXXXXX")
trap 'rm -rf "$build"' EXIT
cp "$spec_dir/package.json" "$spec_dir/package-lock.json" "$build/"
# --ignore-scripts: no package of the lock has an install script; --no-audit/--no-fund: no
# requests beyond the registry's packages. npm's stdout goes to stderr: ours is the path only.
(cd "$build" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 ||
  die "npm ci failed (network? registry?)"
got=$("$build/node_modules/.bin/prism" --version 2>&1) || die "the installed prism does not run on $(node --version): $got"
[[ $got == "$want_version" ]] || die "prism --version says $got, expected $want_version"
printf '%s\n' "$stamp" >"$build/.installed"
rm -rf "$dest"
mv "$build" "$dest"
trap - EXIT
log "prism $got installed (node $(node --version))"
printf '%s\n' "$bin"
