// Restore: its inputs (the target's URL, the auth file's credentials, the options' checks).
#include <cstdlib>

#include "core/file_util.h"
#include "core/host.h"
#include "core/text.h"
#include "recovery/restore.h"

namespace mailvault::recovery {

Status ValidateRestoreOptions(const RestoreOptions& options) {
  for (const std::string& f : options.flags) {
    if (Status st = ValidateImapFlag(f); !st.ok()) return st.error().With("--flag");
  }
  return Status::Ok();
}

Result<ImapEndpoint> ParseImapUrl(const std::string& url, bool allow_plain) {
  ImapEndpoint e;
  std::string rest;
  if (url.rfind("imaps://", 0) == 0) {
    e.tls = ImapEndpoint::Tls::kImplicit;
    e.port = 993;
    rest = url.substr(8);
  } else if (url.rfind("imap://", 0) == 0) {
    e.tls = allow_plain ? ImapEndpoint::Tls::kNone : ImapEndpoint::Tls::kStartTls;
    e.port = 143;
    rest = url.substr(7);
  } else {
    return InvalidArgument("--to must be imap://HOST[:PORT] (STARTTLS) or imaps://HOST[:PORT], not \"" + url + "\"");
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos || rest.find('@') != std::string::npos) {
    return InvalidArgument("--to \"" + url + "\": give the host and port only (credentials go in --auth-file)");
  }
  size_t colon = rest.rfind(':');
  if (!rest.empty() && rest.front() == '[') {  // [v6]:port
    size_t close = rest.find(']');
    if (close == std::string::npos) return InvalidArgument("--to \"" + url + "\": unclosed [");
    e.host = rest.substr(1, close - 1);
    colon = rest.size() > close + 1 && rest[close + 1] == ':' ? close + 1 : std::string::npos;
  } else {
    e.host = rest.substr(0, colon);
  }
  if (colon != std::string::npos) {
    const std::string p = rest.substr(colon + 1);
    char* end = nullptr;
    unsigned long v = std::strtoul(p.c_str(), &end, 10);
    if (p.empty() || *end || v == 0 || v > 65535) return InvalidArgument("--to \"" + url + "\": bad port \"" + p + "\"");
    e.port = static_cast<uint16_t>(v);
  }
  if (e.host.empty()) return InvalidArgument("--to \"" + url + "\": no host");
  if (allow_plain && !IsLoopbackHost(e.host)) {
    return InvalidArgument("--no-tls is allowed only to a loopback address (passwords would cross the network in clear)");
  }
  return e;
}

Result<Credentials> ReadCredentials(const std::string& path) {
  // The mode is checked on the open descriptor before a byte is read (ReadPrivateFile).
  Result<std::string> read = ReadPrivateFile(path, 16 << 20);
  if (!read.ok()) {
    if (read.error().code() == ErrorCode::kInvalidArgument) return InvalidArgument("the auth file " + read.error().message());
    return read.error().With("cannot read the auth file");
  }
  const std::string& text = *read;
  Credentials c;
  MV_RETURN_IF_ERROR(ForEachLine(text, [&](int lineno, std::string_view raw) -> Status {
    std::string line = Trim(raw);
    if (line.empty() || line[0] == '#') return Status::Ok();
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    size_t a = line.find_first_of(" \t");
    size_t b = a == std::string::npos ? a : line.find_first_not_of(" \t", a);
    size_t e = b == std::string::npos ? b : line.find_first_of(" \t", b);
    size_t p = e == std::string::npos ? e : line.find_first_not_of(" \t", e);
    if (p == std::string::npos) return InvalidArgument(where + "expected \"ADDRESS LOGIN PASSWORD\" or \"* LOGIN PASSWORD\"");
    std::string who = line.substr(0, a), login = line.substr(b, e - b), password = line.substr(p);
    if (who == "*") {
      if (c.admin) return InvalidArgument(where + "a second \"*\" line: give one administrator identity");
      c.admin = {login, password};
    } else {
      std::string addr = NormalizeAddress(who);
      if (addr.find('@') == std::string::npos) {
        return InvalidArgument(where + "\"" + who + "\" is not an address: a line is \"ADDRESS LOGIN PASSWORD\" or \"* LOGIN PASSWORD\"");
      }
      if (!c.per_user.emplace(addr, std::make_pair(login, password)).second) {
        return InvalidArgument(where + addr + " is listed twice");
      }
    }
    return Status::Ok();
  }));
  if (!c.admin && c.per_user.empty()) return InvalidArgument("the auth file " + path + " names no identity");
  return c;
}

Result<ImapCredentials> Credentials::For(const std::string& address) const {
  auto it = per_user.find(NormalizeAddress(address));
  if (it != per_user.end()) return ImapCredentials{it->second.first, it->second.second, ""};
  if (admin) return ImapCredentials{admin->first, admin->second, address};
  return NotFound("the auth file has no line for " + address + " and no \"* LOGIN PASSWORD\" administrator line");
}

}  // namespace mailvault::recovery
