#include "cli/control_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <set>
#include <sstream>
#include <streambuf>

#include "core/message.h"

namespace mailvault::cli {
namespace {

using Clock = std::chrono::steady_clock;

// The commands a running service runs for the command line (the list, and reindex as
// a job). The others either need no vault (search, count, status, hash-password), or need it
// to themselves (init, rebuild, serve) and say so.
const std::set<std::string>& ServedCommands() {
  static const std::set<std::string> kCommands = {"import", "list",  "show",  "cat", "export",  "verify", "stats", "user",
                                                  "token",  "audit", "job",   "restore", "index", "check",  "reindex",
                                                  "policy", "hold", "purge", "offsite"};
  return kCommands;
}

// Global options that take a value (main's: --vault, --key-file, --config).
bool TakesValue(const std::string& a) { return a == "--vault" || a == "--key-file" || a == "--config"; }

thread_local const std::atomic<bool>* tl_gone = nullptr;

bool WriteAllFd(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads exactly n bytes before the deadline (false: closed, error or too late).
bool ReadExact(int fd, char* out, size_t n, Clock::time_point deadline) {
  size_t got = 0;
  while (got < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    struct pollfd p = {fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, INT_MAX)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t k = ::recv(fd, out + got, n - got, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    got += static_cast<size_t>(k);
  }
  return true;
}

// A command's stdout or stderr, as frames on the client's socket. Once a write fails (the
// client went away) the rest is dropped and `gone` says so.
class FrameBuf : public std::streambuf {
 public:
  FrameBuf(int fd, char channel, std::mutex* mu, std::atomic<bool>* gone) : fd_(fd), channel_(channel), mu_(mu), gone_(gone) {
    buf_.resize(16 << 10);
    setp(buf_.data(), buf_.data() + buf_.size());
  }
  ~FrameBuf() override { Flush(); }
  bool Flush() {
    const size_t n = static_cast<size_t>(pptr() - pbase());
    if (n && !gone_->load()) {
      std::lock_guard<std::mutex> l(*mu_);
      if (!WriteAllFd(fd_, EncodeFrame(channel_, std::string_view(pbase(), n)))) *gone_ = true;
    }
    setp(buf_.data(), buf_.data() + buf_.size());
    return !gone_->load();
  }

 protected:
  int_type overflow(int_type c) override {
    Flush();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return Flush() ? 0 : -1; }

 private:
  int fd_;
  char channel_;
  std::mutex* mu_;  // stdout's and stderr's frames never interleave mid-frame
  std::atomic<bool>* gone_;
  std::vector<char> buf_;
};

}  // namespace

std::string ControlSocketPath(const std::string& vault_dir) { return vault_dir + "/run/control.sock"; }

bool ClientGone() { return tl_gone && tl_gone->load(); }

// ---- client ---------------------------------------------------------------------------------

bool RunThroughServiceIfRunning(const std::vector<std::string>& args, int* exit_code) {
  // The global options come first; the first other word is the command.
  GlobalOptions g;
  size_t i = 1;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    std::string value;
    if (TakesValue(a) && i + 1 < args.size()) {
      value = args[++i];
    } else if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos && TakesValue(a.substr(0, a.find('=')))) {
      value = a.substr(a.find('=') + 1);
    } else if (a == "--passphrase-stdin") {
      continue;
    } else {
      break;
    }
    const std::string name = a.substr(0, a.find('='));
    if (name == "--vault") g.vault_dir = value;
    if (name == "--key-file") g.key_file = value;
    if (name == "--config") g.config_file = value;
  }
  if (i >= args.size() || !ServedCommands().count(args[i])) return false;
  for (size_t k = i; k < args.size(); ++k) {
    if (args[k] == "--help" || args[k] == "-h") return false;  // help needs no service
  }
  if (!ResolveGlobalOptions(&g).ok() || g.vault_dir.empty()) return false;
  const std::string path = ControlSocketPath(g.vault_dir);
  struct sockaddr_un addr = {};
  if (path.size() >= sizeof addr.sun_path) return false;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);  // no socket, or a stale one from a killed serve: the command opens the vault itself
    return false;
  }
  ControlRequest req;
  req.argv.assign(args.begin() + static_cast<long>(i), args.end());
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd)) req.cwd = cwd;
  if (const char* sudo = std::getenv("SUDO_USER")) req.sudo_user = sudo;
  req.stderr_tty = ::isatty(2) == 1;
  // Passwords come on stdin (user add, user passwd): the first line, as the command reads it.
  if (args[i] == "user" && ::isatty(0) != 1) {
    std::string line;
    char c;
    while (line.size() < kMaxControlStdinBytes && ::read(0, &c, 1) == 1) {
      line.push_back(c);
      if (c == '\n') break;
    }
    req.stdin_data = line;
  }
  // A service that refuses (another user, too many commands) answers without reading the
  // request, so the write may fail: its answer is read all the same. Only a service that sends
  // nothing at all leaves the command to open the vault itself.
  const bool sent = WriteAllFd(fd, EncodeControlRequest(req));
  // Frames until the exit status. No deadline: a restore streams its progress for hours.
  const auto forever = Clock::now() + std::chrono::hours(24 * 365);
  for (bool first = true;; first = false) {
    char head[5];
    if (!ReadExact(fd, head, 5, sent ? forever : Clock::now() + std::chrono::seconds(2))) {
      if (first && !sent) {
        ::close(fd);
        return false;
      }
      std::fprintf(stderr, "mailvault: the service closed the connection before the command finished (see its log)\n");
      *exit_code = 1;
      break;
    }
    uint32_t n = 0;
    for (int k = 1; k < 5; ++k) n = (n << 8) | static_cast<unsigned char>(head[k]);
    std::string data(n, '\0');
    if (n && !ReadExact(fd, data.data(), n, forever)) {
      std::fprintf(stderr, "mailvault: the service closed the connection mid-answer\n");
      *exit_code = 1;
      break;
    }
    if (head[0] == 'x') {
      *exit_code = std::atoi(data.c_str());
      break;
    }
    const int out = head[0] == '1' ? 1 : 2;
    std::string_view left(data);
    while (!left.empty()) {
      ssize_t w = ::write(out, left.data(), left.size());
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      left.remove_prefix(static_cast<size_t>(w));
    }
  }
  ::close(fd);
  return true;
}

// ---- service --------------------------------------------------------------------------------

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const ServiceResources* service, Limits limits) {
  const std::string dir = service->options.vault_dir + "/run";
  ::mkdir(dir.c_str(), 0700);
  const std::string path = ControlSocketPath(service->options.vault_dir);
  struct sockaddr_un addr = {};
  if (path.size() >= sizeof addr.sun_path) {
    return InvalidArgument("the vault's path is too long for its control socket (" + path + "); move the vault");
  }
  ::unlink(path.c_str());  // a killed serve's; we hold the vault's lock
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("cannot create", "the control socket", errno);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Created 0600 whatever the umask: only the service's user (and root) may run commands.
  const mode_t old = ::umask(0177);
  int rc = ::bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0 || ::listen(fd, 64) != 0) {
    int e = errno;
    ::close(fd);
    return ErrnoError("cannot listen on", path, e);
  }
  std::unique_ptr<ControlServer> s(new ControlServer(service, limits, fd, path));
  if (::pipe2(s->wake_fd_, O_CLOEXEC) != 0) return ErrnoError("cannot create", "a pipe", errno);
  s->acceptor_ = std::thread([p = s.get()] { p->AcceptLoop(); });
  return s;
}

ControlServer::ControlServer(const ServiceResources* service, Limits limits, int fd, std::string path)
    : service_(service), limits_(limits), listen_fd_(fd), path_(std::move(path)) {}

ControlServer::~ControlServer() { Stop(); }

void ControlServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_[1] >= 0) (void)!::write(wake_fd_[1], "x", 1);
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::unique_lock<std::mutex> l(threads_mu_);
    threads_done_.wait(l, [&] { return threads_ == 0; });
  }
  ::close(listen_fd_);
  ::unlink(path_.c_str());
  for (int f : wake_fd_) {
    if (f >= 0) ::close(f);
  }
}

void ControlServer::AcceptLoop() {
  while (!stopping_) {
    struct pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    {
      std::lock_guard<std::mutex> l(threads_mu_);
      if (threads_ >= limits_.max_connections) {  // each has a thread: closed at once past the limit
        ::close(fd);
        continue;
      }
      ++threads_;
    }
    std::thread([this, fd] {
      Serve(fd);
      std::lock_guard<std::mutex> l(threads_mu_);
      if (--threads_ == 0) threads_done_.notify_all();
    }).detach();
  }
}

void ControlServer::Serve(int fd) {
  auto refuse = [&](const std::string& why, int code) {
    (void)WriteAllFd(fd, EncodeFrame('2', "mailvault: " + why + "\n"));
    (void)WriteAllFd(fd, EncodeFrame('x', std::to_string(code)));
  };
  struct ucred peer = {};
  socklen_t len = sizeof peer;
  const bool known = ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0;
  if (!known || (peer.uid != 0 && peer.uid != ::geteuid())) {
    refuse("the service runs commands for root and its own user only (uid " + std::to_string(known ? peer.uid : -1) + " is neither)", kExitNotPermitted);
    ::close(fd);
    return;
  }
  const auto deadline = Clock::now() + kControlRequestTimeout;
  char head[8];
  Result<ControlRequest> req = MalformedInput("no request within " + std::to_string(kControlRequestTimeout.count()) + " s");
  if (ReadExact(fd, head, 8, deadline)) {
    Result<uint32_t> n = ParseControlHeader(std::string_view(head, 8));
    if (!n.ok()) {
      req = n.error();
    } else {
      std::string body(*n, '\0');
      if (ReadExact(fd, body.data(), body.size(), deadline)) req = ParseControlRequest(body);
    }
  }
  // Only a client whose request has arrived takes a command slot: idle connections (each
  // dropped after kControlRequestTimeout) never keep others out.
  if (req.ok() && clients_.fetch_add(1) >= limits_.max_clients) {
    --clients_;
    refuse("the service is running " + std::to_string(limits_.max_clients) + " commands already; try again", kExitRestart);
    ::close(fd);
    return;
  }
  const bool counted = req.ok();
  if (req.ok() && !ServedCommands().count(req->argv.front())) {
    // Only what the command line sends here; `serve`, `init` and the like are never run inside.
    req = InvalidArgument("the service does not run \"" + req->argv.front() + "\" for the command line");
  }
  if (!req.ok()) {
    refuse(req.error().ToString(), kExitUsage);
  } else {
    std::mutex mu;
    std::atomic<bool> gone{false};
    FrameBuf out_buf(fd, '1', &mu, &gone), err_buf(fd, '2', &mu, &gone);
    std::ostream out(&out_buf), err(&err_buf);
    std::istringstream in(req->stdin_data);
    ClientIo io;
    io.out = &out;
    io.err = &err;
    io.in = &in;
    io.stderr_tty = req->stderr_tty;
    io.uid = peer.uid;
    io.sudo_user = req->sudo_user;
    io.cwd = req->cwd;
    SetClient(&io);
    SetService(service_);
    tl_gone = &gone;
    std::vector<std::string> argv{"mailvault"};
    argv.insert(argv.end(), req->argv.begin(), req->argv.end());
    int code = 1;
    try {
      code = RunCommandLine(argv, &service_->options);
    } catch (const std::exception& e) {
      err << "mailvault: the command failed inside the service: " << e.what() << "\n";
    }
    out.flush();
    err.flush();
    tl_gone = nullptr;
    SetService(nullptr);
    SetClient(nullptr);
    if (!gone) (void)WriteAllFd(fd, EncodeFrame('x', std::to_string(code)));
  }
  if (counted) --clients_;
  ::close(fd);
}

}  // namespace mailvault::cli
