#include "replication/s3_store.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/bytes.h"
#include "core/file_util.h"
#include "core/fingerprint.h"
#include "core/host.h"
#include "replication/s3_xml.h"

namespace mailvault::replication {
namespace {

constexpr const char* kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(), out,
       &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string Md5Hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_md5(), nullptr);
  return HexEncode(std::string_view(reinterpret_cast<char*>(out), len));
}

std::string AmzDate(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

using Query = std::vector<std::pair<std::string, std::string>>;

std::string CanonicalQuery(Query q) {
  for (auto& [k, v] : q) {
    k = UriEncode(k, false);
    v = UriEncode(v, false);
  }
  std::sort(q.begin(), q.end());
  std::string out;
  for (const auto& [k, v] : q) {
    if (!out.empty()) out += '&';
    out += k + "=" + v;
  }
  return out;
}

struct Response {
  long status = 0;
  std::string body;       // kept for errors and XML answers (bounded)
  std::string date;       // the server's Date header, for clock-skew messages
  std::string etag;
};

// Where a response body goes: a string (bounded), or a sink for downloads.
struct Transfer {
  std::string_view upload;  // request body
  size_t upload_pos = 0;
  std::function<bool(std::string_view)> sink;  // download body; false stops
  Response* response = nullptr;
  bool sink_failed = false;
  Progress progress;
  uint64_t progress_base = 0, progress_total = 0;
};

size_t ReadBody(char* buf, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t want = std::min(size * n, t->upload.size() - t->upload_pos);
  std::memcpy(buf, t->upload.data() + t->upload_pos, want);
  t->upload_pos += want;
  return want;
}

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  // Error answers are always kept (they are small); a download goes to its sink when it is 2xx.
  if (t->sink && t->response->status / 100 == 2) {
    if (!t->sink(std::string_view(data, len))) {
      t->sink_failed = true;
      return 0;
    }
    return len;
  }
  if (t->response->body.size() + len > kMaxS3ResponseBytes) return 0;  // curl fails the transfer
  t->response->body.append(data, len);
  return len;
}

size_t Header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      long status = 0;
      std::from_chars(line.data() + sp + 1, line.data() + line.size(), status);
      t->response->status = status;
    }
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name(line.substr(0, colon));
  for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
  if (name == "etag") {
    std::string e(value);
    if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
    for (char& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
    t->response->etag = e;
  } else if (name == "date") {
    t->response->date = std::string(value);
  }
  return size * n;
}

int OnProgress(void* user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->progress) return 0;
  uint64_t now = uint64_t(ulnow > 0 ? ulnow : dlnow);
  (void)dltotal;
  (void)ultotal;
  return t->progress(t->progress_base + now, t->progress_total) ? 0 : 1;
}

// The state of one multipart upload, remembered for resuming after a crash.
struct UploadState {
  std::string name;
  std::string upload_id;
  uint64_t size = 0;
  uint64_t part_size = 0;
  int64_t mtime_ns = 0;  // of the local file: a different file is never resumed into
};

class S3Store final : public ObjectStore {
 public:
  explicit S3Store(S3Config c) : c_(std::move(c)) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    host_header_ = c_.host;
    if ((c_.tls && c_.port != 443) || (!c_.tls && c_.port != 80)) host_header_ += ":" + std::to_string(c_.port);
  }
  ~S3Store() override {
    if (curl_) curl_easy_cleanup(curl_);
  }

  std::string Describe() const override {
    return std::string(c_.tls ? "s3://" : "s3+http://") + c_.host + ":" + std::to_string(c_.port) + "/" + c_.bucket;
  }

  Status Prepare(bool create) override {
    std::lock_guard lock(mu_);
    MV_ASSIGN_OR_RETURN(Response r, Send("GET", "", {{"location", ""}}, {}, nullptr));
    if (r.status == 200) return DetectVersioning();
    S3ErrorBody e = ParseS3Error(r.body);
    if (r.status != 404 || (e.code != "NoSuchBucket" && !e.code.empty())) return ErrorOf("checking the bucket", r);
    if (!create || !c_.create_bucket) {
      return NotFound("the bucket \"" + c_.bucket + "\" does not exist on " + Describe() +
                      ": create it, or set create-bucket = yes in the target's section");
    }
    std::string body;
    if (c_.region != "us-east-1") {
      body = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>" +
             c_.region + "</LocationConstraint></CreateBucketConfiguration>";
    }
    MV_ASSIGN_OR_RETURN(Response made, Send("PUT", "", {}, body, nullptr));
    if (made.status != 200 && ParseS3Error(made.body).code != "BucketAlreadyOwnedByYou") {
      return ErrorOf("creating the bucket", made);
    }
    return DetectVersioning();
  }

  Status PutFile(const std::string& name, const std::string& path, uint64_t size, const Progress& progress,
                 std::string* sha256_hex) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(mu_);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("opening", path, errno);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    if (size < c_.multipart_threshold) {
      std::string bytes;
      MV_RETURN_IF_ERROR(PreadAll(fd, 0, size, &bytes, path));
      // The payload's SHA-256 is signed anyway: it is the object's hash too.
      const std::string sha = HexEncode(Sha256Of(bytes));
      MV_ASSIGN_OR_RETURN(Response r, Send("PUT", name, {}, bytes, nullptr, progress, 0, size, &sha));
      if (r.status != 200) return ErrorOf("uploading " + name, r);
      if (sha256_hex) *sha256_hex = sha;
      return Status::Ok();
    }
    struct stat st{};
    if (fstat(fd, &st) != 0) return ErrnoError("stat", path, errno);
    return PutMultipart(name, fd, path, size, int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, progress,
                        sha256_hex);
  }

  Status PutBytes(const std::string& name, std::string_view bytes) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(mu_);
    return PutLocked(name, bytes, {}, 0, bytes.size());
  }

  Result<std::string> GetBytes(const std::string& name) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(mu_);
    std::string out;
    MV_ASSIGN_OR_RETURN(Response r, Send("GET", name, {}, {}, [&](std::string_view d) {
                          out.append(d);
                          return true;
                        }));
    if (r.status == 404) return NotFound("no object \"" + name + "\" in " + Describe());
    if (r.status != 200) return ErrorOf("downloading " + name, r);
    return out;
  }

  Status GetFile(const std::string& name, const std::string& path, const Progress& progress) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(mu_);
    const std::string part = path + ".part";
    int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoError("creating", part, errno);
    Status write_error;
    auto r = Send(
        "GET", name, {},
        {},
        [&](std::string_view d) {
          Status st = WriteAll(fd, d, part);
          if (!st.ok()) write_error = st;
          return st.ok();
        },
        progress);
    Status done = write_error;
    if (done.ok() && !r.ok()) done = r.status();
    if (done.ok() && r->status == 404) done = NotFound("no object \"" + name + "\" in " + Describe());
    if (done.ok() && r->status != 200) done = ErrorOf("downloading " + name, *r);
    if (done.ok() && ::fsync(fd) != 0) done = ErrnoError("fsync", part, errno);
    ::close(fd);
    if (done.ok() && ::rename(part.c_str(), path.c_str()) != 0) done = ErrnoError("renaming", part, errno);
    if (!done.ok()) {
      ::unlink(part.c_str());
      return done;
    }
    return FsyncDirectory(DirName(path));
  }

  Result<std::optional<ObjectInfo>> Head(const std::string& name) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(mu_);
    // A listing with the exact name as prefix, rather than HEAD: a HEAD's error has no body, and
    // "403" alone cannot tell a skewed clock from a wrong key.
    MV_ASSIGN_OR_RETURN(std::vector<ObjectInfo> all, ListLocked(name));
    for (const ObjectInfo& o : all) {
      if (o.name == name) return std::optional<ObjectInfo>(o);
    }
    return std::optional<ObjectInfo>();
  }

  Result<std::vector<ObjectInfo>> List(const std::string& prefix) override {
    std::lock_guard lock(mu_);
    return ListLocked(prefix);
  }

  Status Delete(const std::string& name) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(mu_);
    if (versioned_) {
      // Every version and delete marker of the name: a plain DELETE in a versioned bucket only
      // adds a marker, and the purged bytes would stay offsite.
      std::string key_marker, version_marker;
      for (;;) {
        Query q = {{"versions", ""}, {"prefix", name}};
        if (!key_marker.empty()) q.push_back({"key-marker", key_marker});
        if (!version_marker.empty()) q.push_back({"version-id-marker", version_marker});
        MV_ASSIGN_OR_RETURN(Response r, Send("GET", "", q, {}, nullptr));
        if (r.status != 200) return ErrorOf("listing the versions of " + name, r);
        MV_ASSIGN_OR_RETURN(S3ListPage page, ParseListVersions(r.body));
        for (const auto& item : page.items) {
          if (item.key != name) continue;
          MV_ASSIGN_OR_RETURN(Response d, Send("DELETE", name, {{"versionId", item.version_id}}, {}, nullptr));
          if (d.status != 204 && d.status != 200 && d.status != 404) return ErrorOf("deleting a version of " + name, d);
        }
        if (!page.truncated) break;
        key_marker = page.next_key_marker;
        version_marker = page.next_version_marker;
      }
      return Status::Ok();
    }
    MV_ASSIGN_OR_RETURN(Response r, Send("DELETE", name, {}, {}, nullptr));
    if (r.status == 204 || r.status == 200 || r.status == 404) return Status::Ok();
    return ErrorOf("deleting " + name, r);
  }

  Result<int64_t> LockSeconds() override {
    std::lock_guard lock(mu_);
    MV_ASSIGN_OR_RETURN(Response r, Send("GET", "", {{"object-lock", ""}}, {}, nullptr));
    if (r.status == 404) return int64_t{0};  // ObjectLockConfigurationNotFoundError
    if (r.status != 200) return ErrorOf("reading the bucket's object lock", r);
    return ParseObjectLockSeconds(r.body);
  }

 private:
  Status CheckName(const std::string& name) const {
    if (!ValidObjectName(name)) return InvalidArgument("\"" + name + "\" is not a valid offsite object name");
    return Status::Ok();
  }

  Status DetectVersioning() {
    MV_ASSIGN_OR_RETURN(Response r, Send("GET", "", {{"versioning", ""}}, {}, nullptr));
    if (r.status != 200) return ErrorOf("reading the bucket's versioning", r);
    std::string status = XmlText(r.body, "Status").value_or("");
    // Suspended versioning still keeps the versions made while it was on.
    versioned_ = status == "Enabled" || status == "Suspended";
    return Status::Ok();
  }

  Result<std::vector<ObjectInfo>> ListLocked(const std::string& prefix) {
    std::vector<ObjectInfo> out;
    std::string token;
    for (;;) {
      Query q = {{"list-type", "2"}, {"prefix", prefix}};
      if (!token.empty()) q.push_back({"continuation-token", token});
      MV_ASSIGN_OR_RETURN(Response r, Send("GET", "", q, {}, nullptr));
      if (r.status != 200) return ErrorOf("listing " + Describe(), r);
      MV_ASSIGN_OR_RETURN(S3ListPage page, ParseListObjects(r.body));
      for (auto& item : page.items) out.push_back({std::move(item.key), item.size});
      if (!page.truncated) break;
      token = page.next_token;
    }
    std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
    return out;
  }

  Status PutLocked(const std::string& name, std::string_view bytes, const Progress& progress, uint64_t base,
                   uint64_t total) {
    MV_ASSIGN_OR_RETURN(Response r, Send("PUT", name, {}, bytes, nullptr, progress, base, total));
    if (r.status != 200) return ErrorOf("uploading " + name, r);
    return Status::Ok();
  }

  std::string StatePath(const std::string& name) const {
    return c_.upload_state_dir + "/" + HexEncode(Sha256Of(Describe() + "\n" + name)).substr(0, 32) + ".upload";
  }

  std::optional<UploadState> LoadState(const std::string& name) const {
    if (c_.upload_state_dir.empty()) return std::nullopt;
    auto text = ReadSmallFile(StatePath(name), 64 << 10);
    if (!text.ok()) return std::nullopt;
    try {
      auto j = nlohmann::json::parse(*text);
      UploadState s;
      s.name = j.at("name").get<std::string>();
      s.upload_id = j.at("upload_id").get<std::string>();
      s.size = j.at("size").get<uint64_t>();
      s.part_size = j.at("part_size").get<uint64_t>();
      s.mtime_ns = j.at("mtime_ns").get<int64_t>();
      return s;
    } catch (const std::exception&) {
      return std::nullopt;  // a torn or foreign file: start a new upload
    }
  }

  Status SaveState(const UploadState& s) const {
    if (c_.upload_state_dir.empty()) return Status::Ok();
    nlohmann::json j = {{"name", s.name}, {"upload_id", s.upload_id}, {"size", s.size}, {"part_size", s.part_size},
                        {"mtime_ns", s.mtime_ns}};
    ::mkdir(c_.upload_state_dir.c_str(), 0700);
    return ReplaceFileDurably(StatePath(s.name), j.dump(), 0600);
  }

  void DropState(const std::string& name) const {
    if (!c_.upload_state_dir.empty()) ::unlink(StatePath(name).c_str());
  }

  // The parts the server holds for an upload: number -> (etag, size). NotFound when the
  // server no longer knows the upload (completed, aborted or expired).
  Result<std::map<int, S3Part>> ListPartsOf(const std::string& name, const std::string& upload_id) {
    std::map<int, S3Part> parts;
    int marker = 0;
    for (;;) {
      Query q = {{"uploadId", upload_id}};
      if (marker) q.push_back({"part-number-marker", std::to_string(marker)});
      MV_ASSIGN_OR_RETURN(Response r, Send("GET", name, q, {}, nullptr));
      if (r.status == 404) return NotFound("upload " + upload_id + " is gone");
      if (r.status != 200) return ErrorOf("listing the uploaded parts of " + name, r);
      MV_ASSIGN_OR_RETURN(S3PartsPage page, ParseListParts(r.body));
      for (const S3Part& p : page.parts) parts[p.number] = p;
      if (!page.truncated) break;
      marker = page.next_marker;
    }
    return parts;
  }

  Status PutMultipart(const std::string& name, int fd, const std::string& path, uint64_t size, int64_t mtime_ns,
                      const Progress& progress, std::string* sha256_hex) {
    Sha256 whole;  // of every part, in order (skipped ones too: they are read for their MD5)
    std::map<int, S3Part> have;
    UploadState state;
    std::optional<UploadState> old = LoadState(name);
    if (old && old->name == name && old->size == size && old->mtime_ns == mtime_ns && old->part_size >= (5u << 20)) {
      auto parts = ListPartsOf(name, old->upload_id);
      if (parts.ok()) {
        have = std::move(*parts);
        state = *old;
      } else if (parts.error().code() != ErrorCode::kNotFound) {
        return parts.status();
      }
    }
    if (state.upload_id.empty()) {
      MV_ASSIGN_OR_RETURN(Response r, Send("POST", name, {{"uploads", ""}}, {}, nullptr));
      if (r.status != 200) return ErrorOf("starting the upload of " + name, r);
      auto id = XmlText(r.body, "UploadId");
      if (!id || id->empty()) return MalformedInput("the S3 server started an upload of " + name + " but named no UploadId");
      state = {name, *id, size, std::max<uint64_t>(c_.part_size, 5u << 20), mtime_ns};
      MV_RETURN_IF_ERROR(SaveState(state));
    }
    const uint64_t part_size = state.part_size;
    const int count = int((size + part_size - 1) / part_size);
    if (count > 10000) return InvalidArgument(name + ": " + std::to_string(size) + " bytes need more than 10,000 parts");
    std::string xml = "<CompleteMultipartUpload>";
    std::string chunk;
    for (int n = 1; n <= count; ++n) {
      uint64_t off = uint64_t(n - 1) * part_size;
      uint64_t len = std::min(part_size, size - off);
      chunk.clear();
      MV_RETURN_IF_ERROR(PreadAll(fd, off, len, &chunk, path));
      whole.Update(chunk);
      std::string md5 = Md5Hex(chunk);
      auto it = have.find(n);
      if (it == have.end() || it->second.etag != md5 || it->second.size != len) {
        MV_ASSIGN_OR_RETURN(Response r, Send("PUT", name, {{"partNumber", std::to_string(n)}, {"uploadId", state.upload_id}},
                                             chunk, nullptr, progress, off, size));
        if (r.status == 404) DropState(name);  // the upload is gone: the next attempt starts a new one
        if (r.status != 200) return ErrorOf("uploading part " + std::to_string(n) + " of " + name, r);
        if (!r.etag.empty() && r.etag != md5) {
          return Corruption("the S3 server's ETag for part " + std::to_string(n) + " of " + name + " (" + r.etag +
                            ") is not the MD5 of the bytes sent (" + md5 + ")");
        }
      } else if (progress && !progress(off + len, size)) {
        return IoError("stopped");
      }
      xml += "<Part><PartNumber>" + std::to_string(n) + "</PartNumber><ETag>\"" + md5 + "\"</ETag></Part>";
    }
    xml += "</CompleteMultipartUpload>";
    MV_ASSIGN_OR_RETURN(Response r, Send("POST", name, {{"uploadId", state.upload_id}}, xml, nullptr));
    // S3 may answer 200 and put an error in the body (the completion failed after it started).
    if (r.status != 200 || !ParseS3Error(r.body).code.empty()) {
      if (r.status == 404) DropState(name);
      return ErrorOf("completing the upload of " + name, r);
    }
    DropState(name);
    if (sha256_hex) *sha256_hex = HexEncode(whole.Final());
    return Status::Ok();
  }

  // Turns an answer that is not what was asked into an error a person can act on.
  Error ErrorOf(const std::string& what, const Response& r) const {
    S3ErrorBody e = ParseS3Error(r.body);
    std::string where = what + " on " + Describe() + ": HTTP " + std::to_string(r.status) +
                        (e.code.empty() ? "" : " " + e.code) + (e.message.empty() ? "" : " (" + e.message + ")");
    if (e.code == "RequestTimeTooSkewed" || e.code == "RequestExpired") {
      return IoError(where + ": this machine's clock and the S3 server's differ by more than 15 minutes (server: " +
                     (r.date.empty() ? "?" : r.date) + ", here: " + AmzDate(std::time(nullptr)) +
                     "); S3 refuses signatures made at the wrong time. Set the clock (NTP)");
    }
    if (e.code == "InvalidAccessKeyId" || e.code == "SignatureDoesNotMatch" || e.code == "AccessDenied" ||
        (r.status == 403 && e.code.empty())) {
      return Error(ErrorCode::kBadKey, where + ": the credentials were refused; check the target's credentials-file "
                                               "(one line: ACCESS_KEY_ID SECRET) and the user's rights on the bucket");
    }
    if (e.code == "NoSuchBucket") {
      return NotFound(where + ": the bucket does not exist (create it, or set create-bucket = yes)");
    }
    if (r.status == 404) return NotFound(where);
    return IoError(where);
  }

  // One signed request. body is sent as is (its SHA-256 is signed); a 2xx body goes to sink
  // when one is given, else into the response.
  Result<Response> Send(const std::string& method, const std::string& key, const Query& query, std::string_view body,
                        std::function<bool(std::string_view)> sink, const Progress& progress = {}, uint64_t base = 0,
                        uint64_t total = 0, const std::string* body_sha256 = nullptr) {
    if (!curl_) {
      curl_ = curl_easy_init();
      if (!curl_) return Internal("curl_easy_init failed");
    }
    CURL* h = curl_;
    curl_easy_reset(h);
    const std::string uri = "/" + UriEncode(c_.bucket, false) + (key.empty() ? "" : "/" + UriEncode(key, true));
    const std::string canonical_query = CanonicalQuery(query);
    const std::string url = std::string(c_.tls ? "https://" : "http://") + host_header_ + uri +
                            (canonical_query.empty() ? "" : "?" + canonical_query);
    SigV4Request sig;
    sig.method = method;
    sig.canonical_uri = uri;
    sig.canonical_query = canonical_query;
    sig.host_header = host_header_;
    sig.payload_sha256 = body_sha256 ? *body_sha256 : body.empty() ? kEmptySha256 : HexEncode(Sha256Of(body));
    sig.amz_date = AmzDate(std::time(nullptr));
    sig.region = c_.region;
    std::string auth = SignV4(sig, c_.credentials);

    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, ("Host: " + host_header_).c_str());
    headers = curl_slist_append(headers, ("x-amz-date: " + sig.amz_date).c_str());
    headers = curl_slist_append(headers, ("x-amz-content-sha256: " + sig.payload_sha256).c_str());
    headers = curl_slist_append(headers, ("Authorization: " + auth).c_str());
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip per part
    if (method == "PUT" || method == "POST") headers = curl_slist_append(headers, "Content-Type: application/octet-stream");

    Response response;
    Transfer t;
    t.upload = body;
    t.response = &response;
    t.sink = std::move(sink);
    t.progress = progress;
    t.progress_base = base;
    t.progress_total = total;

    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, long(c_.transfer.connect_timeout_seconds));
    // A link that moves less than a byte a second for the stall timeout counts as dropped.
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, long(c_.transfer.stall_timeout_seconds));
    if (c_.transfer.bwlimit) {
      curl_easy_setopt(h, CURLOPT_MAX_SEND_SPEED_LARGE, curl_off_t(c_.transfer.bwlimit));
      curl_easy_setopt(h, CURLOPT_MAX_RECV_SPEED_LARGE, curl_off_t(c_.transfer.bwlimit));
    }
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c_.tls ? "https" : "http");
    if (!c_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, c_.ca_file.c_str());
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &Header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &WriteBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    if (method == "PUT" || method == "POST") {
      if (method == "PUT") {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
      } else {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
      }
      curl_easy_setopt(h, CURLOPT_READFUNCTION, &ReadBody);
      curl_easy_setopt(h, CURLOPT_READDATA, &t);
      if (method == "PUT") {
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(body.size()));
      } else {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.size()));
      }
    } else if (method != "GET") {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
      if (t.sink_failed) return IoError("writing what " + Describe() + " sent for " + key + " failed");
      if (rc == CURLE_ABORTED_BY_CALLBACK) return IoError("stopped");
      // Drop the connection: the next request starts afresh (a half-read answer would poison it).
      curl_easy_cleanup(curl_);
      curl_ = nullptr;
      std::string why = curl_easy_strerror(rc);
      if (rc == CURLE_OPERATION_TIMEDOUT) why += " (no byte moved for " + std::to_string(c_.transfer.stall_timeout_seconds) + " s)";
      return IoError(method + " " + (key.empty() ? c_.bucket : key) + " on " + Describe() + ": " + why);
    }
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    response.status = code;
    return response;
  }

  S3Config c_;
  std::string host_header_;
  std::mutex mu_;      // one request at a time on the connection
  CURL* curl_ = nullptr;
  bool versioned_ = false;
};

}  // namespace

std::string UriEncode(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
        c == '~' || (keep_slash && c == '/')) {
      out.push_back(char(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string SignV4(const SigV4Request& r, const S3Credentials& c) {
  const std::string day = r.amz_date.substr(0, 8);
  const std::string scope = day + "/" + r.region + "/s3/aws4_request";
  // Headers in canonical (sorted) order: host, [extra], x-amz-content-sha256, x-amz-date.
  std::string canonical_headers = "host:" + r.host_header + "\n" + r.extra_signed_headers +
                                  "x-amz-content-sha256:" + r.payload_sha256 + "\nx-amz-date:" + r.amz_date + "\n";
  std::string signed_headers = "host" + r.extra_signed_names + ";x-amz-content-sha256;x-amz-date";
  std::string canonical = r.method + "\n" + r.canonical_uri + "\n" + r.canonical_query + "\n" + canonical_headers + "\n" +
                          signed_headers + "\n" + r.payload_sha256;
  std::string to_sign = "AWS4-HMAC-SHA256\n" + r.amz_date + "\n" + scope + "\n" + HexEncode(Sha256Of(canonical));
  std::string k = Hmac("AWS4" + c.secret_access_key, day);
  k = Hmac(k, r.region);
  k = Hmac(k, "s3");
  k = Hmac(k, "aws4_request");
  std::string signature = HexEncode(Hmac(k, to_sign));
  return "AWS4-HMAC-SHA256 Credential=" + c.access_key_id + "/" + scope + ", SignedHeaders=" + signed_headers +
         ", Signature=" + signature;
}

Result<S3Config> ParseS3Url(const std::string& url, bool no_tls) {
  const std::string scheme = "s3://";
  if (url.rfind(scheme, 0) != 0) return InvalidArgument("an S3 target's url starts with s3:// (s3://HOST:PORT/BUCKET), not \"" + url + "\"");
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos || slash + 1 >= rest.size()) {
    return InvalidArgument("\"" + url + "\" names no bucket (s3://HOST:PORT/BUCKET; path-style)");
  }
  std::string hostport = rest.substr(0, slash);
  std::string bucket = rest.substr(slash + 1);
  while (!bucket.empty() && bucket.back() == '/') bucket.pop_back();
  S3Config c;
  c.tls = !no_tls;
  c.port = c.tls ? 443 : 80;
  std::string host = hostport;
  size_t colon = hostport.rfind(':');
  if (colon != std::string::npos && hostport.find(']', colon) == std::string::npos) {
    host = hostport.substr(0, colon);
    int port = 0;
    auto [p, ec] = std::from_chars(hostport.data() + colon + 1, hostport.data() + hostport.size(), port);
    if (ec != std::errc() || p != hostport.data() + hostport.size() || port < 1 || port > 65535) {
      return InvalidArgument("\"" + url + "\": the port is not a number from 1 to 65535");
    }
    c.port = port;
  }
  if (host.empty()) return InvalidArgument("\"" + url + "\" names no host");
  // Bucket names as S3 allows them (3-63 of a-z 0-9 . -); anything else would need escaping.
  bool ok = bucket.size() >= 3 && bucket.size() <= 63;
  for (char ch : bucket) ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-');
  if (!ok) return InvalidArgument("\"" + bucket + "\" is not a bucket name S3 allows (3-63 of a-z, 0-9, '.', '-')");
  if (no_tls && !IsLoopbackHost(host)) {
    return InvalidArgument("no-tls (plain http) is allowed only to a loopback address: signed requests and the "
                           "offsite bytes' names would cross the network in clear (" + host + ")");
  }
  c.host = host;
  c.bucket = bucket;
  return c;
}

Result<S3Credentials> ReadS3Credentials(const std::string& path) {
  MV_ASSIGN_OR_RETURN(std::string text, ReadPrivateFile(path, 4096));
  std::vector<std::string> words;
  std::string cur;
  for (char ch : text) {
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(ch);
    }
  }
  if (!cur.empty()) words.push_back(cur);
  if (words.size() != 2) {
    return InvalidArgument(path + ": an S3 credentials file holds one line, \"ACCESS_KEY_ID SECRET\" (found " +
                           std::to_string(words.size()) + " words)");
  }
  return S3Credentials{words[0], words[1]};
}

std::unique_ptr<ObjectStore> MakeS3Store(S3Config config) { return std::make_unique<S3Store>(std::move(config)); }

}  // namespace mailvault::replication
