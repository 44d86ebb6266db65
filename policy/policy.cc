#include "policy/policy.h"

#include <algorithm>
#include <climits>
#include <set>

#include "control/records.h"
#include "core/text.h"

namespace mailvault::policy {
namespace {

using nlohmann::json;

unsigned DaysInMonth(int64_t y, unsigned m) {
  static const unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// A field error of policy `index` (counted from 1, as people count).
Error At(size_t index, const std::string& name, const std::string& field, const std::string& what) {
  std::string where = "policy " + std::to_string(index + 1);
  if (!name.empty()) where += " (\"" + name + "\")";
  if (!field.empty()) where += ": \"" + field + "\"";
  return InvalidArgument(where + ": " + what);
}

bool ValidName(std::string_view n) {
  if (n.empty() || n.size() > kMaxNameBytes) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '.' || c == '_' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

}  // namespace

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kRetention: return "retention";
    case Kind::kHold: return "hold";
    case Kind::kTag: return "tag";
  }
  return "?";
}
const char* FromName(From f) { return f == From::kDate ? "date" : "capture"; }
const char* ActionName(Action a) { return a == Action::kDelete ? "delete" : "review"; }

std::string Period::ToString() const {
  if (forever) return "forever";
  static const char* kUnits[] = {"d", "w", "mo", "y"};
  return std::to_string(count) + kUnits[unit];
}

int64_t Period::End(int64_t start) const {
  if (forever) return INT64_MAX;
  if (unit == kDays || unit == kWeeks) return start + static_cast<int64_t>(count) * (unit == kWeeks ? 7 : 1) * 86400;
  // Months and years: the same day of the month (or the month's last day), the same time.
  const int64_t day = FloorDiv(start, 86400), secs = start - day * 86400;
  int64_t y;
  unsigned m, d;
  CivilFromDays(day, &y, &m, &d);
  const int64_t months = static_cast<int64_t>(count) * (unit == kYears ? 12 : 1);
  int64_t total = y * 12 + (m - 1) + months;
  y = FloorDiv(total, 12);
  m = static_cast<unsigned>(total - y * 12) + 1;
  d = std::min(d, DaysInMonth(y, m));
  return DaysFromCivil(y, m, d) * 86400 + secs;
}

Result<Period> ParsePeriod(std::string_view text) {
  std::string t = Trim(text);
  if (t == "forever") return Period{Period::kDays, 0, true};
  size_t i = 0;
  uint64_t n = 0;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9' && n < 1000000) n = n * 10 + static_cast<uint64_t>(t[i++] - '0');
  const std::string unit = t.substr(i);
  if (i == 0) return InvalidArgument("period \"" + t + "\" must be a number and a unit (30d, 6w, 18mo, 7y) or \"forever\"");
  // 200 years in each unit: 73,050 days (with the leap days), 10,435 weeks, 2,400 months.
  Period p;
  uint64_t max = 0;
  if (unit == "d") p.unit = Period::kDays, max = 73050;
  else if (unit == "w") p.unit = Period::kWeeks, max = 73050 / 7;
  else if (unit == "mo") p.unit = Period::kMonths, max = 200 * 12;
  else if (unit == "y") p.unit = Period::kYears, max = 200;
  else return InvalidArgument("period \"" + t + "\": the unit is d, w, mo or y (30d, 6w, 18mo, 7y), or write \"forever\"");
  if (n == 0) return InvalidArgument("period \"" + t + "\" is zero; a retention keeps for at least a day");
  if (n > max) return InvalidArgument("period \"" + t + "\" is longer than 200 years; write \"forever\"");
  p.count = static_cast<uint32_t>(n);
  return p;
}

json Policy::ToJson() const {
  json j{{"name", name}, {"kind", KindName(kind)}};
  if (!query.empty()) j["query"] = query;
  if (!custodians.empty()) j["custodians"] = custodians;
  if (kind == Kind::kRetention) {
    j["keep"] = keep.ToString();
    j["from"] = FromName(from);
    j["action"] = ActionName(action);
  }
  j["weight"] = weight;
  j["retroactive"] = retroactive;
  if (kind == Kind::kHold && !case_id.empty()) j["case"] = case_id;
  if (kind == Kind::kTag) j["tag"] = tag;
  return j;
}

json Policy::ToJsonWithEffective() const {
  json j = ToJson();
  j["effective"] = effective;
  return j;
}

bool Policy::SameDefinition(const Policy& o) const { return ToJson() == o.ToJson(); }

Result<Policy> ParsePolicy(const json& j, size_t index, const QueryCheck& check_query) {
  if (!j.is_object()) return At(index, "", "", "a policy is a JSON object");
  Policy p;
  auto name_it = j.find("name");
  if (name_it == j.end() || !name_it->is_string()) return At(index, "", "name", "is required: a string");
  p.name = name_it->get<std::string>();
  if (!ValidName(p.name)) {
    return At(index, "", "name", "\"" + p.name.substr(0, 80) + "\" must be 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit");
  }
  auto err = [&](const std::string& field, const std::string& what) { return At(index, p.name, field, what); };
  static const std::set<std::string> kFields = {"name",   "kind",   "query",       "custodians", "keep", "from",
                                                "action", "weight", "retroactive", "case",       "tag"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!kFields.count(it.key())) {
      return err(it.key(), "is not a policy field (name, kind, query, custodians, keep, from, action, weight, retroactive, case, tag)");
    }
  }
  auto str = [&](const char* field, std::string* out, size_t max) -> Status {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return Status::Ok();
    if (!it->is_string()) return err(field, "must be a string");
    if (it->get<std::string>().size() > max) return err(field, "is longer than " + std::to_string(max) + " bytes");
    *out = it->get<std::string>();
    return Status::Ok();
  };
  std::string kind;
  MV_RETURN_IF_ERROR(str("kind", &kind, 32));
  if (kind == "retention") p.kind = Kind::kRetention;
  else if (kind == "hold") p.kind = Kind::kHold;
  else if (kind == "tag") p.kind = Kind::kTag;
  else return err("kind", kind.empty() ? "is required: retention, hold or tag" : "\"" + kind + "\" is not retention, hold or tag");

  MV_RETURN_IF_ERROR(str("query", &p.query, kMaxQueryBytes));
  p.query = Trim(p.query);
  if (!p.query.empty() && check_query) {
    if (Status q = check_query(p.query); !q.ok()) return err("query", q.error().message());
  }
  if (auto it = j.find("custodians"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return err("custodians", "must be a list of addresses");
    if (it->size() > kMaxCustodians) return err("custodians", "names more than " + std::to_string(kMaxCustodians) + " addresses");
    std::set<std::string> seen;
    for (const json& a : *it) {
      if (!a.is_string()) return err("custodians", "must be a list of addresses");
      std::string addr = NormalizeAddress(a.get<std::string>());
      const size_t at = addr.find('@');
      if (at == std::string::npos || at == 0 || at + 1 == addr.size() || addr.size() > 320 ||
          addr.find_first_of(" \t\r\n,;<>") != std::string::npos) {
        return err("custodians", "\"" + a.get<std::string>().substr(0, 80) + "\" is not an address (local@domain)");
      }
      if (seen.insert(addr).second) p.custodians.push_back(addr);
    }
  }
  std::string keep, from, action;
  MV_RETURN_IF_ERROR(str("keep", &keep, 32));
  MV_RETURN_IF_ERROR(str("from", &from, 32));
  MV_RETURN_IF_ERROR(str("action", &action, 32));
  if (p.kind == Kind::kRetention) {
    if (keep.empty()) return err("keep", "is required for a retention: a period (30d, 6w, 18mo, 7y) or \"forever\"");
    Result<Period> period = ParsePeriod(keep);
    if (!period.ok()) return err("keep", period.error().message());
    p.keep = *period;
    if (from.empty() || from == "date") p.from = From::kDate;
    else if (from == "capture") p.from = From::kCapture;
    else return err("from", "\"" + from + "\" is not date or capture");
    if (action.empty() || action == "delete") p.action = Action::kDelete;
    else if (action == "review") p.action = Action::kReview;
    else return err("action", "\"" + action + "\" is not delete or review");
  } else {
    // A hold keeps for as long as it exists; a tag keeps nothing. Saying otherwise is a mistake
    // worth hearing about, not a setting to ignore.
    if (!keep.empty()) return err("keep", std::string("is for retentions; a ") + KindName(p.kind) + (p.kind == Kind::kHold ? " keeps until it is released" : " keeps nothing"));
    if (!from.empty()) return err("from", "is for retentions");
    if (!action.empty()) return err("action", "is for retentions");
    p.keep.forever = p.kind == Kind::kHold;
  }
  if (auto it = j.find("weight"); it != j.end() && !it->is_null()) {
    // An unsigned above INT64_MAX would wrap into range if read as signed: refused as it is.
    const bool too_big = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(kMaxWeight);
    if (!it->is_number_integer() || too_big || it->get<int64_t>() < -kMaxWeight || it->get<int64_t>() > kMaxWeight) {
      return err("weight", "must be a whole number from -" + std::to_string(kMaxWeight) + " to " + std::to_string(kMaxWeight));
    }
    p.weight = static_cast<int>(it->get<int64_t>());
  }
  if (auto it = j.find("retroactive"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return err("retroactive", "must be true or false");
    p.retroactive = it->get<bool>();
  }
  MV_RETURN_IF_ERROR(str("case", &p.case_id, 128));
  MV_RETURN_IF_ERROR(str("tag", &p.tag, 128));
  if (p.kind != Kind::kHold && !p.case_id.empty()) return err("case", "is for holds");
  if (p.kind != Kind::kTag && !p.tag.empty()) return err("tag", "is for tag policies");
  if (p.kind == Kind::kHold && p.catch_all() && p.case_id.empty()) {
    return err("", "a hold needs a scope: a query, custodians or a case");
  }
  if (p.kind == Kind::kHold && p.catch_all() && !p.case_id.empty()) {
    // A case alone names the matter, not the mail: holding everything must be said with a query.
    return err("", "a hold on case \"" + p.case_id + "\" needs the mail it holds: a query or custodians (\"query\": \"*\" holds everything)");
  }
  if (p.kind == Kind::kTag) {
    if (p.tag.empty()) p.tag = p.name;
    if (!control::ValidTag(p.tag)) return err("tag", "\"" + p.tag.substr(0, 80) + "\" is not a tag: 1 to 64 of a-z, 0-9, '.', '_', ':', '-'");
  }
  return p;
}

Result<std::vector<Policy>> ParsePolicyArray(const json& array, const QueryCheck& check_query) {
  if (!array.is_array()) return InvalidArgument("a policy set is a JSON array of policies");
  if (array.size() > kMaxPolicies) return InvalidArgument("a policy set has at most " + std::to_string(kMaxPolicies) + " policies");
  std::vector<Policy> out;
  std::set<std::string> names;
  for (size_t i = 0; i < array.size(); ++i) {
    MV_ASSIGN_OR_RETURN(Policy p, ParsePolicy(array[i], i, check_query));
    if (!names.insert(p.name).second) return At(i, p.name, "name", "is used by an earlier policy; names are unique");
    out.push_back(std::move(p));
  }
  return out;
}

Result<std::vector<Policy>> ParsePolicySet(std::string_view text, const QueryCheck& check_query) {
  if (text.size() > kMaxSetBytes) return LimitExceeded("a policy set is at most " + std::to_string(kMaxSetBytes) + " bytes of JSON");
  // Policies are a flat array of flat objects: anything nested deeper is refused, not parsed.
  struct TooDeep {};
  json::parser_callback_t depth_check = [](int depth, json::parse_event_t, json&) {
    if (depth > kMaxSetDepth) throw TooDeep{};
    return true;
  };
  json j;
  try {
    j = json::parse(text, depth_check);
  } catch (const TooDeep&) {
    return InvalidArgument("a policy set is a JSON array of policies, nested at most " + std::to_string(kMaxSetDepth) + " levels deep");
  } catch (const json::out_of_range& e) {
    // A number too large for any field ("weight": 1e999): refused, not a crash.
    return InvalidArgument(std::string("not a policy set: ") + e.what());
  } catch (const json::parse_error& e) {
    // The byte nlohmann stopped at, as a line and column a person can find.
    size_t at = std::min(e.byte ? e.byte - 1 : 0, text.size()), line = 1, col = 1;
    for (size_t i = 0; i < at; ++i) {
      if (text[i] == '\n') ++line, col = 1;
      else ++col;
    }
    std::string what = e.what();
    if (size_t p = what.find("; last read"); p != std::string::npos) what = what.substr(p + 2);
    return InvalidArgument("line " + std::to_string(line) + ", column " + std::to_string(col) + ": not JSON (" + what + ")");
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("not a policy set: ") + e.what());
  }
  return ParsePolicyArray(j, check_query);
}

}  // namespace mailvault::policy
