// mailvault-admin: every subcommand of `mailvault` (see `mailvault --help`). The `mailvault`
// front (main_front.cc) answers search and count itself and runs this for everything else.
// While `mailvault serve` holds the vault, the commands that need it run inside the service,
// over its control socket (control_socket.h); otherwise here.
#include <sys/stat.h>

#include "cli/context.h"
#include "cli/control_socket.h"
#include "core/message.h"

int main(int argc, char** argv) {
  using namespace mailvault::cli;
  // Everything mailvault creates (the vault, its catalog, index and state, exports, restore
  // jobs) is for its owner only, whatever the caller's umask: the index holds mail's words in
  // clear. Files and directories that must be shared are chmod'ed explicitly (none today).
  ::umask(077);
  std::vector<std::string> args(argv, argv + argc);
  if (int code = 0; RunThroughServiceIfRunning(args, &code)) return code;
  mailvault::InitMessageParsing();
  return RunCommandLine(args);
}
