// The command line reaches a running service: while `mailvault serve` holds the vault, the
// commands that need it (import, list, show, cat, export, verify, stats, user, token, audit,
// job, restore, index, check) are run by the service for the command line, over a Unix socket
// in the vault's run directory. The client sends its command line and the service streams back
// what the command prints, then its exit status (control_protocol.h has the format). The
// command's code is the same either way (cli/io.h), so it prints what it prints when it opens
// the vault itself.
//
// Who may connect: root and the service's own user (SO_PEERCRED); the socket is mode 0600 in a
// directory of mode 0700 besides. A client that sends nothing, garbage or too much is dropped
// after kControlRequestTimeout or at the limit, on its own thread: it holds up nobody.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli/context.h"
#include "cli/control_protocol.h"

namespace mailvault::cli {

std::string ControlSocketPath(const std::string& vault_dir);

// Client side. When args name a command a service runs and a serve on the vault answers on
// its socket: runs it there, copying its output to this process's stdout and stderr, sets
// *exit_code and returns true. Returns false (nothing done) when no service answers.
bool RunThroughServiceIfRunning(const std::vector<std::string>& args, int* exit_code);

// Service side.
class ControlServer {
 public:
  struct Limits {
    size_t max_clients = 16;       // commands at once; more are told so and dropped
    size_t max_connections = 256;  // connections at once (idle ones included); more are closed
  };
  // Listens on ControlSocketPath(service->options.vault_dir) (an old socket there, left by a
  // killed serve, is replaced: serve holds the vault's lock, so no other serve uses it).
  static Result<std::unique_ptr<ControlServer>> Start(const ServiceResources* service, Limits limits);
  static Result<std::unique_ptr<ControlServer>> Start(const ServiceResources* service) { return Start(service, Limits()); }
  ~ControlServer();
  // Stops accepting; commands that are running finish (a restore's client stops following).
  void Stop();

 private:
  ControlServer(const ServiceResources* service, Limits limits, int fd, std::string path);
  void AcceptLoop();
  void Serve(int fd);

  const ServiceResources* service_;
  Limits limits_;
  int listen_fd_;
  int wake_fd_[2] = {-1, -1};
  std::string path_;
  std::atomic<size_t> clients_{0};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  // Each client has a thread of its own (detached); Stop waits for them to finish.
  std::mutex threads_mu_;
  std::condition_variable threads_done_;
  size_t threads_ = 0;  // REQUIRES: threads_mu_
};

// True while the calling command runs for a client whose connection has gone (a restore
// following its job then stops following; the job goes on in the service).
bool ClientGone();

}  // namespace mailvault::cli
