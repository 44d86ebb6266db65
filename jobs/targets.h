// Restore targets: the IMAP servers restores go to, configured by an administrator so that
// passwords never travel through the API or land in job records. From the config file:
//
//   [restore-target primary]
//   url = imaps://mail.corp.example          # or imap://HOST:PORT (STARTTLS)
//   auth-file = /etc/mailvault/restore.auth  # as for `restore --auth-file` (mode 0600)
//   ca-file = /etc/mailvault/mail-ca.pem     # optional
//   insecure = no                            # yes: do not check the certificate (lab use)
//   no-tls = no                              # yes: plain IMAP, loopback addresses only
//   timeout = 60                             # seconds before a connection counts as lost
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/result.h"
#include "recovery/restore.h"

namespace mailvault::jobs {

struct RestoreTargetConfig {
  std::string name;
  std::string url;
  std::string auth_file;
  std::string ca_file;
  bool insecure = false;
  bool no_tls = false;
  int timeout_seconds = 60;

  // The endpoint and auth file a restore job uses; refuses a URL that the flags would refuse.
  Result<recovery::RestoreTarget> Resolve() const;
  nlohmann::json PublicJson() const;  // for the API: no secrets (the auth file's path only)
};

// Every [restore-target NAME] section of the config file; errors name the file and line.
Result<std::map<std::string, RestoreTargetConfig>> LoadRestoreTargets(const std::string& config_file);

}  // namespace mailvault::jobs
