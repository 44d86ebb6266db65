#include "jobs/targets.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "core/file_util.h"
#include "core/text.h"

namespace mailvault::jobs {

Result<recovery::RestoreTarget> RestoreTargetConfig::Resolve() const {
  const std::string where = "restore target \"" + name + "\": ";
  Result<recovery::ImapEndpoint> endpoint = recovery::ParseImapUrl(url, no_tls);
  if (!endpoint.ok()) return endpoint.error().With(where.substr(0, where.size() - 2));
  endpoint->verify_certificate = !insecure;
  endpoint->ca_file = ca_file;
  endpoint->timeout = std::chrono::seconds(timeout_seconds);
  return recovery::RestoreTarget{url, *endpoint, auth_file};
}

nlohmann::json RestoreTargetConfig::PublicJson() const {
  return nlohmann::json{{"name", name}, {"url", url}, {"insecure", insecure}, {"no_tls", no_tls}};
}

Result<std::map<std::string, RestoreTargetConfig>> LoadRestoreTargets(const std::string& config_file) {
  std::map<std::string, RestoreTargetConfig> out;
  if (config_file.empty()) return out;
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(config_file, 1 << 20));
  RestoreTargetConfig* current = nullptr;
  MV_RETURN_IF_ERROR(ForEachLine(text, [&](int lineno, std::string_view raw) -> Status {
    std::string line = Trim(raw.substr(0, raw.find('#')));
    if (line.empty()) return Status::Ok();
    const std::string where = config_file + ":" + std::to_string(lineno) + ": ";
    if (line.front() == '[') {
      current = nullptr;
      const std::string head = "[restore-target";
      if (line.rfind(head, 0) != 0 || line.back() != ']') return Status::Ok();
      std::string name = Trim(line.substr(head.size(), line.size() - head.size() - 1));
      bool valid = !name.empty() && name.size() <= 64;
      for (char c : name) valid &= std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      if (!valid) return InvalidArgument(where + "a restore target's name is 1-64 of a-z, 0-9, - _ . (e.g. [restore-target primary])");
      if (out.count(name)) return InvalidArgument(where + "restore target \"" + name + "\" is defined twice");
      current = &out[name];
      current->name = name;
      return Status::Ok();
    }
    if (!current) return Status::Ok();
    size_t eq = line.find('=');
    if (eq == std::string::npos) return InvalidArgument(where + "expected \"key = value\"");
    std::string key = Trim(line.substr(0, eq)), value = Trim(line.substr(eq + 1));
    auto yes_no = [&](bool* b) -> Status {
      if (value == "yes" || value == "true") *b = true;
      else if (value == "no" || value == "false") *b = false;
      else return InvalidArgument(where + key + " is yes or no");
      return Status::Ok();
    };
    if (key == "url") {
      current->url = value;
    } else if (key == "auth-file") {
      current->auth_file = std::filesystem::absolute(value).string();
    } else if (key == "ca-file") {
      current->ca_file = std::filesystem::absolute(value).string();
    } else if (key == "insecure") {
      return yes_no(&current->insecure);
    } else if (key == "no-tls") {
      return yes_no(&current->no_tls);
    } else if (key == "timeout") {
      char* end = nullptr;
      long v = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end || v < 5 || v > 3600) return InvalidArgument(where + "timeout is 5 to 3600 seconds");
      current->timeout_seconds = static_cast<int>(v);
    } else {
      return InvalidArgument(where + "unknown key \"" + key + "\" in [restore-target " + current->name +
                             "] (url, auth-file, ca-file, insecure, no-tls, timeout)");
    }
    return Status::Ok();
  }));
  for (auto& [name, t] : out) {
    if (t.url.empty() || t.auth_file.empty()) {
      return InvalidArgument(config_file + ": [restore-target " + name + "] needs url and auth-file");
    }
    MV_RETURN_IF_ERROR(t.Resolve().status());
  }
  return out;
}

}  // namespace mailvault::jobs
