// search, count: questions to the full-text index. Linked into both binaries; needs nothing of
// the vault, so the lean `mailvault` front answers them itself (cli/main_front.cc).
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "indexer/searcher.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;

std::string Dump(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace); }

json HitJson(const index::SearchHit& h) {
  const index::Summary& s = h.summary;
  json j{{"id", s.id},
         {"message_id", s.message_id},
         {"date", FormatDate(s.date, s.utc_offset_minutes)},
         {"date_from", s.date_from_header ? "header" : "capture"},
         {"from", s.from},
         {"subject", s.subject},
         {"size", s.size}};
  if (h.relevance > 0) j["relevance"] = h.relevance;
  if (!s.notes.empty()) j["index_notes"] = s.notes;
  return j;
}

}  // namespace

void AddSearchCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  // ---- search ----
  auto* search = app.add_subcommand("search", "search the full-text index (query language: docs/query-language.md)");
  thread_local std::string query, sort = "date";
  query = {}; sort = "date";
  thread_local size_t limit = 50, offset = 0;
  limit = 50; offset = 0;
  thread_local bool as_json = false;
  as_json = false;
  search->add_option("QUERY", query, "the query, e.g. 'from:jm@jmason.org date:2002-08..'")->required();
  search->add_option("--limit", limit, "at most this many results (0: all)")->capture_default_str();
  search->add_option("--offset", offset, "skip this many results first")->capture_default_str();
  search->add_option("--sort", sort, "date (newest first), oldest, or relevance")
      ->check(CLI::IsMember({"date", "oldest", "relevance"}))
      ->capture_default_str();
  search->add_flag("--json", as_json, "print a JSON object: query, total (exact), offset, results");
  search->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(g.vault_dir);
    if (!s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    index::SearchRequest req;
    req.query = query;
    req.limit = limit;
    req.offset = offset;
    req.sort = sort == "relevance" ? index::SortOrder::kRelevance
               : sort == "oldest"  ? index::SortOrder::kDateOldestFirst
                                   : index::SortOrder::kDateNewestFirst;
    Result<index::SearchResult> r = (*s)->Search(req);
    if (!r.ok()) {
      *exit_code = Fail(r.error());
      return;
    }
    if (as_json) {
      json hits = json::array();
      for (const auto& h : r->hits) hits.push_back(HitJson(h));
      std::cout << Dump(json{{"query", query}, {"total", r->total}, {"offset", offset}, {"results", hits}}) << "\n";
      return;
    }
    for (const auto& h : r->hits) {
      const index::Summary& m = h.summary;
      std::cout << m.id.substr(0, 12) << "  " << FormatDate(m.date, m.utc_offset_minutes) << "  " << m.from << "  "
                << m.subject << "  " << m.size << (m.notes.empty() ? "" : "  [partly indexed]") << "\n";
    }
    std::cout << r->total << (r->total == 1 ? " message" : " messages");
    if (r->hits.size() < r->total) std::cout << " (" << r->hits.size() << " shown from " << offset + 1 << ")";
    std::cout << "\n";
  });

  // ---- count ----
  auto* count = app.add_subcommand("count", "print the exact number of messages matching a query");
  thread_local std::string count_query;
  count_query = {};
  count->add_option("QUERY", count_query, "the query")->required();
  count->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(g.vault_dir);
    if (!s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    Result<uint64_t> n = (*s)->Count(count_query);
    if (!n.ok()) {
      *exit_code = Fail(n.error());
      return;
    }
    std::cout << *n << "\n";
  });

}

}  // namespace mailvault::cli
