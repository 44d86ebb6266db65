#include "replication/formats.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>

#include "core/bytes.h"
#include "core/file_util.h"

namespace mailvault::replication {
namespace {

constexpr std::string_view kStateMagic = "mailvault-offsite-state v1\n";

std::string HmacHex(const SecretKey& key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.view().size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(),
       out, &len);
  return HexEncode(std::string_view(reinterpret_cast<char*>(out), len));
}

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Numbers as the manifest writes them: integers. nlohmann's get<> turns a JSON float such as
// 1e24 into an integer by a cast that is undefined behaviour when it does not fit (fuzz_offsite
// found it), so the type is checked first.
struct BadNumber {
  std::string what;
};
uint64_t U64(const nlohmann::json& v, const char* what) {
  if (!v.is_number_unsigned()) throw BadNumber{what};
  return v.get<uint64_t>();
}
int64_t I64(const nlohmann::json& v, const char* what) {
  if (!v.is_number_integer()) throw BadNumber{what};
  return v.get<int64_t>();
}
uint32_t U32(const nlohmann::json& v, const char* what) {
  uint64_t n = U64(v, what);
  if (n > UINT32_MAX) throw BadNumber{what};
  return uint32_t(n);
}

nlohmann::json ObjectJson(const ShippedObject& o) { return {{"name", o.name}, {"size", o.size}, {"sha256", o.sha256}}; }

ShippedObject ObjectOf(const nlohmann::json& j) {
  return {j.at("name").get<std::string>(), U64(j.at("size"), "size"), j.at("sha256").get<std::string>()};
}

nlohmann::json ManifestJson(const Manifest& m) {
  nlohmann::json packs = nlohmann::json::array();
  for (const ShippedPack& p : m.packs) {
    nlohmann::json segs = nlohmann::json::array();
    for (const auto& s : p.segments) segs.push_back(ObjectJson(s));
    packs.push_back({{"number", p.number}, {"generation", p.generation}, {"sealed", p.sealed}, {"bytes", p.bytes},
                     {"segments", segs}});
  }
  nlohmann::json identity = nlohmann::json::array();
  for (const auto& o : m.identity) identity.push_back(ObjectJson(o));
  nlohmann::json state_objects = nlohmann::json::array();
  for (const auto& o : m.state.objects) state_objects.push_back(ObjectJson(o));
  nlohmann::json out = {{"format", kManifestFormat},
          {"vault", m.vault},
          {"target", m.target},
          {"seq", m.seq},
          {"prev", m.prev},
          {"time_us", m.time_us},
          {"identity", identity},
          {"packs", packs},
          {"state", {{"generation", m.state.generation}, {"objects", state_objects}}},
          {"audit", {{"seq", m.audit_seq}, {"head", m.audit_head}}}};
  if (m.index) {
    nlohmann::json objects = nlohmann::json::array();
    for (const auto& o : m.index->objects) objects.push_back(ObjectJson(o));
    out["index"] = {{"change", m.index->change}, {"time_us", m.index->time_us}, {"bytes", m.index->bytes}, {"objects", objects}};
  }
  return out;
}

Result<Manifest> ManifestOf(const nlohmann::json& j) {
  try {
    if (j.at("format").get<std::string>() != kManifestFormat) {
      return Error(ErrorCode::kUnsupported, "offsite manifest of format \"" + j.at("format").get<std::string>() +
                                                "\"; this build reads \"" + kManifestFormat + "\"");
    }
    Manifest m;
    m.vault = j.at("vault").get<std::string>();
    m.target = j.at("target").get<std::string>();
    m.seq = U64(j.at("seq"), "seq");
    m.prev = j.at("prev").get<std::string>();
    m.time_us = I64(j.at("time_us"), "time_us");
    for (const auto& o : j.at("identity")) m.identity.push_back(ObjectOf(o));
    for (const auto& p : j.at("packs")) {
      ShippedPack sp;
      sp.number = U64(p.at("number"), "number");
      sp.generation = U32(p.at("generation"), "generation");
      sp.sealed = p.at("sealed").get<bool>();
      sp.bytes = U64(p.at("bytes"), "bytes");
      uint64_t total = 0;
      for (const auto& s : p.at("segments")) {
        sp.segments.push_back(ObjectOf(s));
        if (total + sp.segments.back().size < total) throw BadNumber{"segment size"};
        total += sp.segments.back().size;
      }
      if (total != sp.bytes) {
        return Corruption("offsite manifest " + std::to_string(m.seq) + ": pack " + std::to_string(sp.number) +
                          "'s segments add up to " + std::to_string(total) + " bytes, not " + std::to_string(sp.bytes));
      }
      m.packs.push_back(std::move(sp));
    }
    m.state.generation = U64(j.at("state").at("generation"), "state generation");
    for (const auto& o : j.at("state").at("objects")) m.state.objects.push_back(ObjectOf(o));
    m.audit_seq = U64(j.at("audit").at("seq"), "audit seq");
    m.audit_head = j.at("audit").at("head").get<std::string>();
    if (j.contains("index")) {
      const auto& ix = j.at("index");
      ShippedIndex si;
      si.change = U64(ix.at("change"), "index change");
      si.time_us = I64(ix.at("time_us"), "index time_us");
      si.bytes = U64(ix.at("bytes"), "index bytes");
      for (const auto& o : ix.at("objects")) si.objects.push_back(ObjectOf(o));
      m.index = std::move(si);
    }
    return m;
  } catch (const nlohmann::json::exception& e) {
    return MalformedInput(std::string("offsite manifest: ") + e.what());
  } catch (const BadNumber& e) {
    return MalformedInput("offsite manifest: \"" + e.what + "\" is not a whole number in range");
  }
}

Result<nlohmann::json> ParseBounded(std::string_view bytes) {
  if (bytes.size() > kMaxManifestBytes) {
    return LimitExceeded("offsite manifest of " + std::to_string(bytes.size()) + " bytes; at most " +
                         std::to_string(kMaxManifestBytes) + " are read");
  }
  nlohmann::json j = nlohmann::json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return MalformedInput("offsite manifest: not a JSON object");
  return j;
}

}  // namespace

std::string ManifestName(uint64_t seq) { return "manifests/" + Hex16(seq); }

std::optional<uint64_t> ManifestSeqOf(std::string_view name) {
  constexpr std::string_view prefix = "manifests/";
  if (name.size() != prefix.size() + 16 || name.substr(0, prefix.size()) != prefix) return std::nullopt;
  uint64_t v = 0;
  auto digits = name.substr(prefix.size());
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, 16);
  if (ec != std::errc() || p != digits.data() + digits.size()) return std::nullopt;
  return v;
}

std::string SegmentName(uint64_t pack, uint32_t generation, uint64_t offset) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "packs/%08llu.g%u.%016llx", static_cast<unsigned long long>(pack), generation,
                static_cast<unsigned long long>(offset));
  return buf;
}

std::string StateObjectName(uint64_t generation, bool snapshot) {
  return "state/" + Hex16(generation) + (snapshot ? ".snap" : ".delta");
}

std::string IndexObjectName(uint64_t manifest_seq, uint64_t chunk) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "index/%016llx.%08llu", static_cast<unsigned long long>(manifest_seq),
                static_cast<unsigned long long>(chunk));
  return buf;
}

std::string EncodeManifest(const Manifest& m, const SecretKey& key) {
  nlohmann::json j = ManifestJson(m);
  std::string body = j.dump();
  j["mac"] = HmacHex(key, body);
  return j.dump(1) + "\n";
}

Result<Manifest> DecodeManifestUnauthenticated(std::string_view bytes) {
  MV_ASSIGN_OR_RETURN(nlohmann::json j, ParseBounded(bytes));
  return ManifestOf(j);
}

Result<Manifest> DecodeManifest(std::string_view bytes, const SecretKey& key) {
  MV_ASSIGN_OR_RETURN(nlohmann::json j, ParseBounded(bytes));
  if (!j.contains("mac") || !j["mac"].is_string()) return Corruption("offsite manifest without its MAC");
  std::string mac = j["mac"].get<std::string>();
  j.erase("mac");
  // The MAC is over the compact dump of the rest: nlohmann keeps object keys sorted, so the
  // same content always dumps to the same bytes.
  std::string want = HmacHex(key, j.dump());
  if (mac.size() != want.size() || CRYPTO_memcmp(mac.data(), want.data(), want.size()) != 0) {
    return Corruption("offsite manifest fails authentication: it was edited, or it belongs to another vault's key");
  }
  return ManifestOf(j);
}

std::string EncodeStateObject(const StateObject& o, const SecretKey& key, std::string_view name) {
  ByteWriter w;
  w.PutU8(o.snapshot ? 1 : 2);
  w.PutU64(o.base_generation);
  w.PutU64(o.generation);
  w.PutVarint(o.records.size());
  for (const StateRecord& r : o.records) {
    w.PutU8(r.value ? 1 : 0);
    w.PutString(r.key);
    if (r.value) w.PutString(*r.value);
  }
  std::string plain = std::string(kStateMagic) + w.Take();
  std::string box;
  Seal(key, name, plain, &box);
  return box;
}

Result<StateObject> DecodeStateObject(std::string_view box, const SecretKey& key, std::string_view name) {
  if (box.size() > kMaxStateObjectBytes) return LimitExceeded("offsite state object " + std::string(name) + " is too large");
  Result<std::string> plain = Open(key, name, box);
  if (!plain.ok()) {
    return Corruption("offsite state object " + std::string(name) +
                      " fails authentication (damaged, renamed, or another vault's key)");
  }
  std::string_view in = *plain;
  if (in.substr(0, kStateMagic.size()) != kStateMagic) return Corruption(std::string(name) + " is not a state object");
  ByteReader r(in.substr(kStateMagic.size()));
  StateObject o;
  uint8_t kind = 0;
  uint64_t count = 0;
  if (!r.GetU8(&kind) || (kind != 1 && kind != 2) || !r.GetU64(&o.base_generation) || !r.GetU64(&o.generation) ||
      !r.GetVarint(&count)) {
    return Corruption(std::string(name) + ": a truncated header");
  }
  o.snapshot = kind == 1;
  for (uint64_t i = 0; i < count; ++i) {
    uint8_t has = 0;
    std::string_view k, v;
    if (!r.GetU8(&has) || !r.GetString(&k, 64 << 10) || (has && !r.GetString(&v, 256u << 20))) {
      return Corruption(std::string(name) + ": record " + std::to_string(i) + " is truncated");
    }
    StateRecord rec{std::string(k), std::nullopt};
    if (has) rec.value = std::string(v);
    o.records.push_back(std::move(rec));
  }
  if (r.remaining() != 0) return Corruption(std::string(name) + ": bytes after the last record");
  return o;
}

namespace {
constexpr std::string_view kIndexMagic = "mailvault-offsite-index v1\n";
}  // namespace

Status WriteIndexArchive(const std::string& dir, const std::function<Status(std::string_view)>& sink) {
  std::error_code ec;
  std::vector<std::string> files;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) files.push_back(std::filesystem::relative(it->path(), dir, ec).string());
  }
  if (ec) return IoError("reading the index copy " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  MV_RETURN_IF_ERROR(sink(kIndexMagic));
  for (const std::string& rel : files) {
    const std::string path = dir + "/" + rel;
    MV_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(path, kMaxIndexFileBytes));
    ByteWriter w;
    w.PutString(rel);
    w.PutU64(bytes.size());
    MV_RETURN_IF_ERROR(sink(w.buffer()));
    MV_RETURN_IF_ERROR(sink(bytes));
  }
  return Status::Ok();
}

Status ReadIndexArchive(std::string_view archive, const std::string& dir) {
  if (archive.substr(0, kIndexMagic.size()) != kIndexMagic) return Corruption("the offsite index archive has no header");
  ByteReader r(archive.substr(kIndexMagic.size()));
  std::set<std::string> seen;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("cannot create " + dir + ": " + ec.message());
  while (r.remaining() > 0) {
    std::string_view path, bytes;
    uint64_t size = 0;
    if (!r.GetString(&path, 4096) || !r.GetU64(&size) || size > r.remaining() || !r.GetBytes(size_t(size), &bytes)) {
      return Corruption("the offsite index archive is cut short");
    }
    std::string p(path);
    bool bad = p.empty() || p.front() == '/' || p.find('\0') != std::string::npos || !seen.insert(p).second;
    for (size_t at = 0; !bad && at <= p.size();) {
      size_t slash = p.find('/', at);
      std::string_view seg = std::string_view(p).substr(at, slash == std::string::npos ? std::string::npos : slash - at);
      bad = seg.empty() || seg == "." || seg == "..";
      if (slash == std::string::npos) break;
      at = slash + 1;
    }
    if (bad) return Corruption("the offsite index archive names a file \"" + p + "\" that cannot be written under the index");
    const std::string out = dir + "/" + p;
    std::filesystem::create_directories(std::filesystem::path(out).parent_path(), ec);
    if (ec) return IoError("cannot create the directory of " + out + ": " + ec.message());
    MV_RETURN_IF_ERROR(ReplaceFileDurably(out, bytes, 0600));
  }
  return Status::Ok();
}

std::string SealIndexChunk(std::string_view chunk, const SecretKey& key, std::string_view name) {
  std::string box;
  Seal(key, name, chunk, &box);
  return box;
}

Result<std::string> OpenIndexChunk(std::string_view box, const SecretKey& key, std::string_view name) {
  Result<std::string> plain = Open(key, name, box);
  if (!plain.ok()) return Corruption("offsite index chunk " + std::string(name) + " fails authentication (damaged, renamed, or another vault's key)");
  return plain;
}

}  // namespace mailvault::replication
