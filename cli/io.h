// Where a command's output goes and whose it is. A command run by this process writes to its
// own stdout and stderr. A command that a running `mailvault serve` runs for a client of its
// control socket (cli/control_socket.h) writes to that client's, through the socket, and acts
// for that client (its uid, its login behind sudo, its working directory): the command code is
// the same either way, so it prints exactly what it prints when it opens the vault itself.
#pragma once

#include <cstdarg>
#include <istream>
#include <ostream>
#include <string>

namespace mailvault::cli {

struct ClientIo {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  std::istream* in = nullptr;
  bool stderr_tty = false;  // the client's stderr is a terminal (progress lines redraw)
  unsigned uid = 0;         // from the socket's peer credentials
  std::string sudo_user;    // the client's SUDO_USER, for the audit trail
  std::string cwd;          // relative paths in the command are the client's
};

// The calling thread's client, or nullptr when the command runs for this process.
const ClientIo* Client();
// Sets (or, with nullptr, clears) the calling thread's client.
void SetClient(const ClientIo* client);

std::ostream& Out();
std::ostream& Err();
std::istream& In();
// printf to Err().
void ErrPrintf(const char* format, ...) __attribute__((format(printf, 1, 2)));
// A path the user gave, as this process must open it: relative to the client's directory
// when a service runs the command for a client.
std::string UserPath(const std::string& path);

}  // namespace mailvault::cli
