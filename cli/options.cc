// Global options, the config file, and how errors and dates are printed: shared by both
// binaries of the `mailvault` command (cli/main_front.cc, cli/main.cc).
#include "cli/context.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include "core/file_util.h"
#include "core/limits.h"
#include "core/text.h"

namespace mailvault::cli {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The config file: "key = value" lines, '#' comments. Keys are documented in docs/config.md.
Status ApplyConfigFile(const std::string& path, GlobalOptions* g) {
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 1 << 20));
  bool in_section = false;  // the sections belong to `mailvault serve` (capture/config.h, api/config.h, jobs/targets.h, replication/config.h)
  return ForEachLine(text, [&](int lineno, std::string_view raw) -> Status {
    std::string line = Trim(std::string(raw.substr(0, raw.find('#'))));
    if (line.empty()) return Status::Ok();
    if (line.front() == '[') {
      if (line != "[capture]" && line != "[api]" && line.rfind("[restore-target ", 0) != 0 && line.rfind("[offsite ", 0) != 0) {
        return InvalidArgument(path + ":" + std::to_string(lineno) + ": unknown section " + line +
                               " (sections: [capture], [api], [restore-target NAME], [offsite NAME])");
      }
      in_section = true;
      return Status::Ok();
    }
    if (in_section) return Status::Ok();
    size_t eq = line.find('=');
    if (eq == std::string::npos) {
      return InvalidArgument(path + ":" + std::to_string(lineno) + ": expected \"key = value\"");
    }
    std::string key = Trim(line.substr(0, eq)), value = Trim(line.substr(eq + 1));
    auto number = [&](uint64_t* out) -> Status {
      char* end = nullptr;
      unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || *end) return InvalidArgument(path + ":" + std::to_string(lineno) + ": " + key + " needs a number");
      *out = v;
      return Status::Ok();
    };
    uint64_t n = 0;
    if (key == "vault") {
      if (g->vault_dir.empty()) g->vault_dir = value;
    } else if (key == "key-file") {
      if (g->key_file.empty()) g->key_file = value;
    } else if (key == "seal-bytes") {
      MV_RETURN_IF_ERROR(number(&g->vault_options.seal_bytes));
      if (g->vault_options.seal_bytes < (1u << 20)) return InvalidArgument(path + ":" + std::to_string(lineno) + ": seal-bytes must be at least 1048576");
    } else if (key == "compression-level") {
      MV_RETURN_IF_ERROR(number(&n));
      if (n < 1 || n > 19) return InvalidArgument(path + ":" + std::to_string(lineno) + ": compression-level must be 1 to 19");
      g->vault_options.compression.level = static_cast<int>(n);
    } else if (key == "dictionary-bytes") {
      MV_RETURN_IF_ERROR(number(&n));
      if (n < 4096 || n > (8u << 20)) return InvalidArgument(path + ":" + std::to_string(lineno) + ": dictionary-bytes must be 4096 to 8388608");
      g->vault_options.compression.dictionary_bytes = n;
    } else if (key == "max-message-bytes") {
      MV_RETURN_IF_ERROR(number(&g->vault_options.limits.max_message_bytes));
      if (g->vault_options.limits.max_message_bytes > kMaxMessageBytesCeiling) {
        return InvalidArgument(path + ":" + std::to_string(lineno) + ": max-message-bytes may be at most " +
                               std::to_string(kMaxMessageBytesCeiling) + " (1 GiB)");
      }
    } else {
      return InvalidArgument(path + ":" + std::to_string(lineno) + ": unknown setting \"" + key + "\" (see docs/config.md)");
    }
    return Status::Ok();
  });
}

}  // namespace

Status ResolveGlobalOptions(GlobalOptions* g) {
  if (g->vault_dir.empty()) g->vault_dir = Env("MAILVAULT_VAULT");
  if (g->key_file.empty()) g->key_file = Env("MAILVAULT_KEY_FILE");
  if (g->config_file.empty()) g->config_file = Env("MAILVAULT_CONFIG");
  if (!g->config_file.empty()) MV_RETURN_IF_ERROR(ApplyConfigFile(g->config_file, g));
  if (g->vault_dir.empty()) {
    return InvalidArgument("no vault given: use --vault DIR, set MAILVAULT_VAULT, or name it in a config file (--config)");
  }
  return Status::Ok();
}

bool ResolveOrFail(GlobalOptions& g, int* exit_code) {
  if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
    *exit_code = Fail(s.error());
    return false;
  }
  return true;
}

int Fail(const Error& e) {
  Err() << "mailvault: " << e.ToString() << "\n";
  return MeaningOf(e.code()).exit_status;
}
int Fail(const std::string& message) {
  Err() << "mailvault: " << message << "\n";
  return kExitUsage;
}

bool StderrIsTerminal() { return ::isatty(2) == 1; }

std::string FormatDate(std::optional<int64_t> t, int offset_minutes) {
  if (!t) return "-";
  time_t local = static_cast<time_t>(*t + offset_minutes * 60);
  struct tm tm;
  if (!gmtime_r(&local, &tm)) return "-";
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char tz[16];
  int m = offset_minutes < 0 ? -offset_minutes : offset_minutes;
  std::snprintf(tz, sizeof tz, "%c%02d:%02d", offset_minutes < 0 ? '-' : '+', m / 60, m % 60);
  return std::string(buf) + tz;
}

std::string FormatBytes(uint64_t n) {
  char buf[32];
  if (n < 10 * 1024) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  else if (n < 10ull * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
  else if (n < 10ull * 1024 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", n / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.1f GiB", n / 1073741824.0);
  return buf;
}

}  // namespace mailvault::cli
