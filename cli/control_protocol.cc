#include "cli/control_protocol.h"

#include <cstring>
#include <nlohmann/json.hpp>

namespace mailvault::cli {

using nlohmann::json;

namespace {

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}

}  // namespace

Result<uint32_t> ParseControlHeader(std::string_view h) {
  if (h.size() != 8 || std::memcmp(h.data(), kControlMagic, 4) != 0) {
    return MalformedInput("not a mailvault control request (it starts with \"MVC1\")");
  }
  uint32_t n = 0;
  for (size_t i = 4; i < 8; ++i) n = (n << 8) | static_cast<unsigned char>(h[i]);
  if (n > kMaxControlRequestBytes) {
    return LimitExceeded("a control request is at most " + std::to_string(kMaxControlRequestBytes) + " bytes; this one says " +
                         std::to_string(n));
  }
  return n;
}

Result<ControlRequest> ParseControlRequest(std::string_view bytes) {
  if (bytes.size() > kMaxControlRequestBytes) return LimitExceeded("control request over " + std::to_string(kMaxControlRequestBytes) + " bytes");
  json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return MalformedInput("a control request is a JSON object");
  ControlRequest r;
  auto argv = j.find("argv");
  if (argv == j.end() || !argv->is_array() || argv->empty() || argv->size() > kMaxControlArgs) {
    return MalformedInput("\"argv\" is an array of 1 to " + std::to_string(kMaxControlArgs) + " strings");
  }
  for (const json& a : *argv) {
    if (!a.is_string()) return MalformedInput("\"argv\" holds strings only");
    r.argv.push_back(a.get<std::string>());
  }
  auto str = [&](const char* name, std::string* out, size_t max) -> Status {
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) return Status::Ok();
    if (!it->is_string() || it->get_ref<const std::string&>().size() > max) {
      return MalformedInput(std::string("\"") + name + "\" is a string of at most " + std::to_string(max) + " bytes");
    }
    *out = it->get<std::string>();
    return Status::Ok();
  };
  MV_RETURN_IF_ERROR(str("cwd", &r.cwd, 4096));
  MV_RETURN_IF_ERROR(str("sudo_user", &r.sudo_user, 256));
  MV_RETURN_IF_ERROR(str("stdin", &r.stdin_data, kMaxControlStdinBytes));
  if (!r.cwd.empty() && r.cwd.front() != '/') return MalformedInput("\"cwd\" is an absolute path");
  if (auto it = j.find("stderr_tty"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return MalformedInput("\"stderr_tty\" is true or false");
    r.stderr_tty = it->get<bool>();
  }
  return r;
}

std::string EncodeControlRequest(const ControlRequest& r) {
  json j{{"argv", r.argv}, {"cwd", r.cwd}, {"sudo_user", r.sudo_user}, {"stderr_tty", r.stderr_tty}, {"stdin", r.stdin_data}};
  std::string body = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string out(kControlMagic, 4);
  PutU32(&out, static_cast<uint32_t>(body.size()));
  return out + body;
}

std::string EncodeFrame(char channel, std::string_view data) {
  std::string out(1, channel);
  PutU32(&out, static_cast<uint32_t>(data.size()));
  out.append(data);
  return out;
}

}  // namespace mailvault::cli
