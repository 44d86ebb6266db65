#include "api/export.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "core/bytes.h"
#include "core/file_util.h"
#include "core/message.h"
#include "core/text.h"
#include "indexer/searcher.h"

namespace mailvault::api {
namespace {

// SHA-256 over bytes as they are written.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view s) { EVP_DigestUpdate(ctx_, s.data(), s.size()); }
  std::string HexDigest() {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, d, &n);
    return HexEncode(std::string_view(reinterpret_cast<const char*>(d), n));
  }

 private:
  EVP_MD_CTX* ctx_;
};

Result<std::string> FileSha256(const std::string& path, uint64_t* size) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return IoError("cannot read " + path);
  Sha256 h;
  char buf[1 << 16];
  size_t n;
  *size = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    h.Update(std::string_view(buf, n));
    *size += n;
  }
  bool bad = std::ferror(f);
  std::fclose(f);
  if (bad) return IoError("cannot read " + path);
  return h.HexDigest();
}

Status SyncFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open " + path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return IoError("cannot sync " + path);
  return Status::Ok();
}

std::string Join(const std::vector<Address>& list) {
  std::string out;
  for (const Address& a : list) {
    if (!out.empty()) out += "; ";
    out += a.name.empty() ? a.address : a.name + " <" + a.address + ">";
  }
  return out;
}

std::string AscTime(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%a %b %e %H:%M:%S %Y", &tm);
  return buf;
}

// mboxrd: a line that is ">*From " gets one more ">", so any reader can undo it exactly.
void AppendMboxrd(std::string_view raw, std::string* out) {
  size_t i = 0;
  while (i < raw.size()) {
    size_t nl = raw.find('\n', i);
    size_t end = nl == std::string_view::npos ? raw.size() : nl + 1;
    std::string_view line = raw.substr(i, end - i);
    size_t gt = line.find_first_not_of('>');
    if (gt != std::string_view::npos && line.substr(gt).substr(0, 5) == "From ") out->push_back('>');
    out->append(line);
    i = end;
  }
  if (raw.empty() || raw.back() != '\n') out->push_back('\n');
  out->push_back('\n');
}

}  // namespace

std::string CsvField(std::string_view s) {
  std::string v(s);
  if (!v.empty() && std::string_view("=+-@\t\r").find(v[0]) != std::string_view::npos) v = "'" + v;
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  return out + "\"";
}

ExportRunner::ExportRunner(Vault* vault, std::string vault_dir, Records* records, AuditLog* audit, ExportSettings settings)
    : vault_(vault), vault_dir_(std::move(vault_dir)), records_(records), audit_(audit), settings_(std::move(settings)) {
  if (settings_.dir.empty()) settings_.dir = vault_dir_ + "/exports";
}

ExportRunner::~ExportRunner() { Stop(); }

std::string ExportRunner::ArtefactPath(const ExportJob& j) const {
  return settings_.dir + "/" + j.id + (j.format == "zip" ? ".zip" : ".mbox");
}
std::string ExportRunner::ManifestPath(const ExportJob& j) const { return settings_.dir + "/" + j.id + ".manifest.csv"; }

Status ExportRunner::Start() {
  if (::mkdir(settings_.dir.c_str(), 0700) != 0 && errno != EEXIST) return IoError("cannot create " + settings_.dir);
  MV_ASSIGN_OR_RETURN(std::vector<ExportJob> jobs, records_->Jobs());
  for (ExportJob& j : jobs) {
    // A job a stopped server left behind starts again from the beginning (its partial file is
    // overwritten).
    if (j.state == "queued" || j.state == "running") queue_.push_back(j.id);
  }
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void ExportRunner::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ExportRunner::Enqueue(const std::string& id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(id);
  }
  cv_.notify_all();
}

bool ExportRunner::SaveUnlessCancelled(const ExportJob& job) {
  std::lock_guard<std::mutex> l(mu_);
  if (cancelled_.count(job.id)) return false;
  (void)records_->PutJob(job);
  return true;
}

Status ExportRunner::Cancel(const std::string& id, const std::function<Status(const ExportJob&)>& before_write) {
  // Under mu_ throughout, so the runner's next save (SaveUnlessCancelled) sees the
  // cancellation and cannot write its own state over it, and ExpireOld cannot expire the job
  // between what before_write saw and what is written.
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(std::optional<ExportJob> found, records_->GetJob(id));
  if (!found) return NotFound("no export " + id);
  ExportJob job = *found;
  MV_RETURN_IF_ERROR(before_write(job));
  cancelled_.insert(id);
  ::unlink(ArtefactPath(job).c_str());
  ::unlink((ArtefactPath(job) + ".part").c_str());
  ::unlink(ManifestPath(job).c_str());
  if (job.state == "queued" || job.state == "running") job.state = "cancelled";
  else if (job.state == "done") job.state = "deleted";
  job.finished = job.finished ? job.finished : NowSeconds();
  return records_->PutJob(job);
}

size_t ExportRunner::ExpireOld() {
  Result<std::vector<ExportJob>> jobs = records_->Jobs();
  if (!jobs.ok()) return 0;
  size_t n = 0;
  const int64_t now = NowSeconds();
  auto due = [now](const ExportJob& j) { return j.state == "done" && j.expires_at != 0 && j.expires_at <= now; };
  for (const ExportJob& listed : *jobs) {
    if (!due(listed)) continue;
    // Looked at again under the lock: request threads and the runner call this at once, and a
    // job may have been deleted since the list was read.
    std::lock_guard<std::mutex> l(mu_);
    Result<std::optional<ExportJob>> current = records_->GetJob(listed.id);
    if (!current.ok() || !*current || !due(**current)) continue;
    ExportJob j = **current;
    ::unlink(ArtefactPath(j).c_str());
    ::unlink(ManifestPath(j).c_str());
    j.state = "expired";
    if (records_->PutJob(j).ok()) {
      ++n;
      AuditEvent e;
      e.user = j.owner;
      e.auth = "system";
      e.action = "export.expire";
      e.target = j.id;
      (void)audit_->Record(e);
    }
  }
  return n;
}

void ExportRunner::Loop() {
  // Exports are background work: they yield the disk and CPU to capture and to searches.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  for (;;) {
    std::string id;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::minutes(10), [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      if (queue_.empty()) {
        l.unlock();
        ExpireOld();
        continue;
      }
      id = queue_.front();
      queue_.pop_front();
    }
    RunJob(id);
  }
}

void ExportRunner::RunJob(const std::string& id) {
  Result<std::optional<ExportJob>> found = records_->GetJob(id);
  if (!found.ok() || !*found) return;
  ExportJob job = **found;
  if (job.state != "queued" && job.state != "running") return;
  job.state = "running";
  job.done = 0;
  if (!SaveUnlessCancelled(job)) return;
  auto fail = [&](const std::string& why) {
    job.state = "failed";
    job.error = why;
    job.finished = NowSeconds();
    ::unlink((ArtefactPath(job) + ".part").c_str());
    if (!SaveUnlessCancelled(job)) return;
    AuditEvent e;
    e.user = job.owner;
    e.auth = "system";
    e.action = "export.failed";
    e.target = job.id;
    e.details = nlohmann::json{{"error", why}};
    (void)audit_->Record(e);
  };
  Result<std::unique_ptr<index::Searcher>> searcher = index::Searcher::Open(vault_dir_);
  if (!searcher.ok()) return fail(searcher.error().message());
  index::SearchRequest sr;
  sr.query = job.query;
  sr.filter = job.filter;
  sr.tags = TagQuery(records_);
  sr.limit = settings_.max_messages + 1;
  Result<std::vector<std::string>> ids = Error(ErrorCode::kInternal, "");
  try {
    ids = (*searcher)->MatchingIds(sr);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  if (!ids.ok()) return fail(ids.error().message());
  if (ids->size() > settings_.max_messages) {
    return fail("more than " + std::to_string(settings_.max_messages) + " messages match; one export holds at most that many (narrow the query)");
  }
  job.total = ids->size();
  auto last_save = std::chrono::steady_clock::now();
  auto progress = [&](const ExportJob& j) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_ || cancelled_.count(id)) return false;
    }
    if (std::chrono::steady_clock::now() - last_save > std::chrono::seconds(2)) {
      last_save = std::chrono::steady_clock::now();
      return SaveUnlessCancelled(j);
    }
    return true;
  };
  Status s = Write(*vault_, *records_, *ids, job.format, ArtefactPath(job), ManifestPath(job), &job, progress);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (cancelled_.count(id)) {
      ::unlink(ArtefactPath(job).c_str());
      ::unlink(ManifestPath(job).c_str());
      return;  // Cancel() wrote the record
    }
    if (stop_ && !s.ok()) {
      // Interrupted by shutdown: left "running", so the next start runs it again.
      return;
    }
  }
  if (!s.ok()) return fail(s.error().message());
  job.state = "done";
  job.finished = NowSeconds();
  job.expires_at = job.finished + settings_.ttl_seconds;
  if (!SaveUnlessCancelled(job)) {
    ::unlink(ArtefactPath(job).c_str());
    ::unlink(ManifestPath(job).c_str());
    return;
  }
  AuditEvent e;
  e.user = job.owner;
  e.auth = "system";
  e.action = "export.done";
  e.target = job.id;
  e.details = nlohmann::json{{"messages", job.total}, {"bytes", job.bytes}, {"sha256", job.artefact_sha256},
                             {"manifest_sha256", job.manifest_sha256}};
  (void)audit_->Record(e);
}

Status ExportRunner::Write(const Vault& vault, const Records& records, const std::vector<std::string>& ids,
                           const std::string& format, const std::string& out_path, const std::string& manifest_path,
                           ExportJob* job, const std::function<bool(const ExportJob&)>& progress) {
  (void)records;
  const std::string part = out_path + ".part";
  std::string manifest = "id,message_id,date,from,to,size,sha256,custodian\r\n";
  std::unique_ptr<archive, decltype(&archive_write_free)> zip(nullptr, archive_write_free);
  FILE* mbox = nullptr;
  if (format == "zip") {
    zip.reset(archive_write_new());
    if (archive_write_set_format_zip(zip.get()) != ARCHIVE_OK ||
        archive_write_zip_set_compression_deflate(zip.get()) != ARCHIVE_OK ||
        archive_write_open_filename(zip.get(), part.c_str()) != ARCHIVE_OK) {
      return IoError("cannot create " + part + ": " + (archive_error_string(zip.get()) ? archive_error_string(zip.get()) : "?"));
    }
  } else {
    mbox = std::fopen(part.c_str(), "wb");
    if (!mbox) return IoError("cannot create " + part);
  }
  // An export holds mail: readable by the service's user only, as the vault is.
  ::chmod(part.c_str(), 0600);
  auto close_all = [&] {
    if (mbox) std::fclose(mbox);
    mbox = nullptr;
  };
  const int64_t now = NowSeconds();
  auto add_zip_entry = [&](const std::string& name, std::string_view data) -> Status {
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_mtime(e.get(), now, 0);
    if (archive_write_header(zip.get(), e.get()) != ARCHIVE_OK ||
        archive_write_data(zip.get(), data.data(), data.size()) != static_cast<la_ssize_t>(data.size())) {
      return IoError("writing " + name + " to the zip: " + (archive_error_string(zip.get()) ? archive_error_string(zip.get()) : "?"));
    }
    return Status::Ok();
  };
  job->done = 0;
  Status failed;
  for (size_t start = 0; start < ids.size() && failed.ok(); start += 500) {
    std::vector<ObjectId> batch;
    for (size_t i = start; i < std::min(ids.size(), start + 500); ++i) {
      std::optional<ObjectId> id = ObjectId::FromHex(ids[i]);
      if (id) batch.push_back(*id);
    }
    Status read = vault.ReadMany(batch, [&](const ObjectId& id, Result<StoredMessage> m) {
      if (!failed.ok()) return;
      if (!m.ok()) {
        failed = m.error().With("reading " + id.Hex());
        return;
      }
      const std::string& raw = m->raw;
      const std::string sha = Sha256Hex(raw);
      if (sha != id.Hex()) {
        failed = Corruption("message " + id.Hex() + " read back with SHA-256 " + sha + "; run `mailvault verify`");
        return;
      }
      std::string to, custodian, date, message_id, from;
      MessageSummary s = SummarizeHeaders(raw);
      message_id = s.message_id;
      from = s.from;
      if (s.date) date = Rfc3339(*s.date);
      Result<ParsedMessage> parsed = ParseMessage(raw, MessageLimits{});
      if (parsed.ok()) to = Join(parsed->to);
      // Each custodian once, compared whole (a substring test dropped bob@x after jimbob@x),
      // and only the captures of the job's scope: the others' mailboxes are not the
      // reviewer's to see (the mbox separator's sender comes from those captures too).
      auto in_scope = [&](const Envelope& e) {
        return job->custodians.empty() ||
               (!e.custodian.empty() &&
                std::find(job->custodians.begin(), job->custodians.end(), NormalizeAddress(e.custodian)) != job->custodians.end());
      };
      std::vector<std::string> named;
      std::string sender;
      for (const Envelope& e : m->envelopes) {
        if (!in_scope(e)) continue;
        if (sender.empty()) sender = e.sender;
        if (e.custodian.empty() || std::find(named.begin(), named.end(), e.custodian) != named.end()) continue;
        named.push_back(e.custodian);
        custodian += (custodian.empty() ? "" : "; ") + e.custodian;
      }
      manifest += CsvField(id.Hex()) + "," + CsvField(message_id) + "," + CsvField(date) + "," + CsvField(from) + "," +
                  CsvField(to) + "," + std::to_string(raw.size()) + "," + sha + "," + CsvField(custodian) + "\r\n";
      if (zip) {
        failed = add_zip_entry("messages/" + id.Hex() + ".eml", raw);
      } else {
        std::string chunk = "From " + (sender.empty() ? std::string("MAILER-DAEMON") : sender) + " " + AscTime(s.date.value_or(now)) + "\n";
        AppendMboxrd(raw, &chunk);
        if (std::fwrite(chunk.data(), 1, chunk.size(), mbox) != chunk.size()) failed = IoError("writing " + part);
      }
      ++job->done;
    });
    if (!read.ok() && failed.ok()) failed = read;
    if (failed.ok() && !progress(*job)) failed = Error(ErrorCode::kInternal, "the export was cancelled or the server is stopping");
  }
  if (failed.ok() && zip) failed = add_zip_entry("manifest.csv", manifest);
  if (zip) {
    if (archive_write_close(zip.get()) != ARCHIVE_OK && failed.ok()) failed = IoError("closing " + part);
    zip.reset();
  }
  if (mbox && std::fflush(mbox) != 0 && failed.ok()) failed = IoError("writing " + part);
  close_all();
  if (!failed.ok()) {
    ::unlink(part.c_str());
    return failed;
  }
  MV_RETURN_IF_ERROR(SyncFile(part));
  MV_RETURN_IF_ERROR(ReplaceFileDurably(manifest_path, manifest, 0600));
  if (::rename(part.c_str(), out_path.c_str()) != 0) return IoError("cannot rename " + part);
  MV_RETURN_IF_ERROR(SyncFile(out_path.substr(0, out_path.rfind('/'))));  // the rename itself
  MV_ASSIGN_OR_RETURN(job->artefact_sha256, FileSha256(out_path, &job->bytes));
  job->manifest_sha256 = Sha256Hex(manifest);
  return Status::Ok();
}

}  // namespace mailvault::api
