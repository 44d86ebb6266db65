#include "indexer/extract/helper_process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace mailvault::extract_internal {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxStderr = 4096;

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd) {
    Close();
    fd_ = fd;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

bool SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

int MillisLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

// Between fork and exec only async-signal-safe calls: everything is prepared before fork.
// `status` is close-on-exec: if execv fails, its errno goes there.
[[noreturn]] void ExecChild(const char* path, char* const argv[], char* const envp[], int in, int out, int err, int status,
                            pid_t parent, const rlimit& as, const rlimit& cpu) {
  // Die with the thread that started us, even if it is killed before it can kill us.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(126);
  // Out of the way first: a daemon that closed 0-2 may have been handed them for our pipes.
  int fds[4] = {in, out, err, status};
  for (int& fd : fds) {
    fd = fcntl(fd, F_DUPFD, 10);
    if (fd < 0) _exit(126);
  }
  for (int target = 0; target < 4; ++target) {
    if (dup2(fds[target], target) < 0) _exit(126);
  }
  if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0) _exit(126);
  // Descriptors the indexer holds (index, vault, sockets) are none of the helper's business.
  if (syscall(SYS_close_range, 4u, ~0u, 0u) != 0) {
    for (int fd = 4; fd < 65536; ++fd) close(fd);
  }
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_AS, &as);
  setrlimit(RLIMIT_CPU, &cpu);
  setrlimit(RLIMIT_CORE, &no_core);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  execve(path, argv, envp);
  int e = errno;
  ssize_t ignored = write(3, &e, sizeof e);
  (void)ignored;
  _exit(127);
}

// The errno with which the child's execv failed, 0 if it succeeded (the pipe closed on exec),
// or -1 if that was not known by the deadline.
int ExecError(int status_fd, Clock::time_point deadline) {
  int e = 0;
  size_t got = 0;
  for (;;) {
    pollfd p{status_fd, POLLIN, 0};
    int r = poll(&p, 1, MillisLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t n = read(status_fd, reinterpret_cast<char*>(&e) + got, sizeof e - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return got == 0 ? 0 : -1;
    got += static_cast<size_t>(n);
    if (got == sizeof e) return e;
  }
}

}  // namespace

HelperRun RunHelperProcess(const std::string& path, std::string_view input, const HelperLimits& limits) {
  HelperRun run;
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(std::max(limits.timeout_ms, 0));

  // stdin is a socket so that writing after the helper quit fails with EPIPE under
  // MSG_NOSIGNAL instead of raising SIGPIPE in the caller.
  int sv[2], out_pipe[2], err_pipe[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    run.error = std::string("socketpair: ") + std::strerror(errno);
    return run;
  }
  Fd in_parent(sv[0]), in_child(sv[1]);
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    run.error = std::string("pipe: ") + std::strerror(errno);
    return run;
  }
  Fd out_parent(out_pipe[0]), out_child(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    run.error = std::string("pipe: ") + std::strerror(errno);
    return run;
  }
  Fd err_parent(err_pipe[0]), err_child(err_pipe[1]);
  int status_pipe[2];
  if (pipe2(status_pipe, O_CLOEXEC) != 0) {
    run.error = std::string("pipe: ") + std::strerror(errno);
    return run;
  }
  Fd status_parent(status_pipe[0]), status_child(status_pipe[1]);

  // The CPU limit backs up the wall-clock deadline if this process stops watching (SIGXCPU at
  // the soft limit, SIGKILL a second later).
  rlim_t cpu_s = static_cast<rlim_t>(std::max(limits.timeout_ms, 0) / 1000 + 1);
  const rlimit as{limits.memory_bytes, limits.memory_bytes};
  const rlimit cpu{cpu_s, cpu_s + 1};
  std::string path_copy = path;
  char* argv[] = {path_copy.data(), nullptr};
  // The helper parses hostile PDFs: it gets none of our environment (MAILVAULT_PASSPHRASE and
  // the key file's path live there), only what poppler needs to run.
  char env_path[] = "PATH=/usr/bin:/bin";
  char env_lang[] = "LANG=C.UTF-8";
  char* envp[] = {env_path, env_lang, nullptr};
  const pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    run.error = std::string("fork: ") + std::strerror(errno);
    return run;
  }
  if (pid == 0) {
    ExecChild(path_copy.c_str(), argv, envp, in_child.get(), out_child.get(), err_child.get(), status_child.get(), parent, as,
              cpu);
  }

  in_child.Close();
  out_child.Close();
  err_child.Close();
  status_child.Close();
  if (int e = ExecError(status_parent.get(), deadline); e != 0) {
    kill(pid, SIGKILL);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    if (e < 0) {
      run.end = HelperRun::End::kTimedOut;
    } else {
      run.error = "exec " + path + ": " + std::strerror(e);
    }
    return run;
  }
  status_parent.Close();
  SetNonBlocking(in_parent.get());
  SetNonBlocking(out_parent.get());
  SetNonBlocking(err_parent.get());

  size_t sent = 0;
  if (input.empty()) in_parent.Close();
  char buf[64 << 10];
  bool killed = false;
  while (out_parent.get() >= 0 || err_parent.get() >= 0) {
    int wait_ms = MillisLeft(deadline);
    if (wait_ms == 0) {
      run.end = HelperRun::End::kTimedOut;
      killed = true;
      break;
    }
    pollfd fds[3];
    nfds_t n = 0;
    int in_i = -1, out_i = -1, err_i = -1;
    if (in_parent.get() >= 0) {
      in_i = static_cast<int>(n);
      fds[n++] = {in_parent.get(), POLLOUT, 0};
    }
    if (out_parent.get() >= 0) {
      out_i = static_cast<int>(n);
      fds[n++] = {out_parent.get(), POLLIN, 0};
    }
    if (err_parent.get() >= 0) {
      err_i = static_cast<int>(n);
      fds[n++] = {err_parent.get(), POLLIN, 0};
    }
    int r = poll(fds, n, wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      run.end = HelperRun::End::kNotStarted;
      run.error = std::string("poll: ") + std::strerror(errno);
      killed = true;
      break;
    }
    if (in_i >= 0 && fds[in_i].revents != 0) {
      size_t chunk = std::min<size_t>(input.size() - sent, 256 << 10);
      ssize_t w = send(in_parent.get(), input.data() + sent, chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) sent += static_cast<size_t>(w);
      // The helper stopped reading (it quit, or decided it had enough): stop writing.
      if ((w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) || sent == input.size()) {
        in_parent.Close();
      }
    }
    if (out_i >= 0 && fds[out_i].revents != 0) {
      ssize_t got = read(out_parent.get(), buf, sizeof buf);
      if (got > 0) {
        run.out.append(buf, static_cast<size_t>(got));
        if (run.out.size() > limits.max_output_bytes) {
          run.end = HelperRun::End::kOutputCapped;
          killed = true;
          break;
        }
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        out_parent.Close();
      }
    }
    if (err_i >= 0 && fds[err_i].revents != 0) {
      ssize_t got = read(err_parent.get(), buf, sizeof buf);
      if (got > 0) {
        size_t keep = std::min(static_cast<size_t>(got), kMaxStderr - std::min(kMaxStderr, run.err.size()));
        run.err.append(buf, keep);
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        err_parent.Close();
      }
    }
  }
  in_parent.Close();
  out_parent.Close();
  err_parent.Close();

  // Output closed: the helper is exiting. Give it until the deadline to do so.
  int status = 0;
  while (!killed) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (MillisLeft(deadline) == 0) {
      run.end = HelperRun::End::kTimedOut;
      killed = true;
      break;
    }
    const timespec pause{0, 2'000'000};
    nanosleep(&pause, nullptr);
  }
  if (killed) {
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return run;
  }
  if (WIFEXITED(status)) {
    run.end = HelperRun::End::kExited;
    run.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    run.end = HelperRun::End::kSignaled;
    run.term_signal = WTERMSIG(status);
  }
  return run;
}

}  // namespace mailvault::extract_internal
