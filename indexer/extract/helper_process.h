// Internal to indexer/extract: runs an untrusted-input helper program (mailvault-pdftotext) in
// its own process, with its memory and CPU capped, a wall-clock deadline, and its output capped.
// The helper may crash, hang, stop reading its input or write forever: none of that can block,
// signal or crash the caller.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mailvault::extract_internal {

struct HelperLimits {
  int timeout_ms = 10000;             // wall time, then SIGKILL
  size_t memory_bytes = 1 << 30;      // RLIMIT_AS
  size_t max_output_bytes = 2 << 20;  // stdout beyond this is not read; the helper is killed
};

struct HelperRun {
  enum class End {
    kExited,        // exit_code is valid
    kSignaled,      // term_signal is valid (crash, or the CPU limit)
    kTimedOut,      // killed at the deadline
    kOutputCapped,  // killed after writing more than max_output_bytes
    kNotStarted,    // pipes or fork failed; error says why
  };
  End end = End::kNotStarted;
  int exit_code = 0;
  int term_signal = 0;
  std::string out;    // stdout, at most max_output_bytes (+ one read)
  std::string err;    // the first 4 KiB of stderr
  std::string error;  // for kNotStarted
};

// Runs `path` (no arguments) with `input` on its stdin. Safe to call from several threads.
// The child gets no file descriptors but 0, 1 and 2, an empty signal mask, no core dumps, an
// environment of PATH=/usr/bin:/bin and LANG=C.UTF-8 alone (nothing of the caller's, whose
// environment may hold MAILVAULT_PASSPHRASE), and dies with the calling thread (PR_SET_PDEATHSIG). The caller must not set SIGCHLD to SIG_IGN.
HelperRun RunHelperProcess(const std::string& path, std::string_view input, const HelperLimits& limits);

}  // namespace mailvault::extract_internal
