// Policies as data (policy/): a set parsed and refused at its limits, calendar periods,
// arbitration rule by rule, 10,000 random scenarios against an oracle written from the rules
// in policy/engine.h (not from engine.cc: it never calls Decide's helpers, Period::End or
// Applies), and the versioned store with its preservation lock against a real state store and
// audit trail.
#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <set>
#include <sstream>

#include "control/audit.h"
#include "control/jobs.h"
#include "control/state.h"
#include "policy/engine.h"
#include "policy/evaluate.h"
#include "policy/policy.h"
#include "policy/store.h"
#include "tests/test_util.h"

namespace mailvault::policy {
namespace {

using nlohmann::json;
using testing::TempDir;

// Seconds since the epoch of a UTC civil time, by the C library (not by policy.cc's arithmetic).
int64_t Utc(int year, int month, int day, int hour = 0, int min = 0, int sec = 0) {
  struct tm tm = {};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return static_cast<int64_t>(timegm(&tm));
}

std::string ParseError(const std::string& text, const QueryCheck& check = {}) {
  Result<std::vector<Policy>> r = ParsePolicySet(text, check);
  return r.ok() ? std::string("(accepted)") : r.error().message();
}

bool Contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

Period P(const std::string& text) {
  Result<Period> p = ParsePeriod(text);
  EXPECT_TRUE(p.ok()) << text;
  return p.ok() ? *p : Period{};
}

Policy Retention(const std::string& name, const std::string& keep, Action action = Action::kDelete, int weight = 0) {
  Policy p;
  p.name = name;
  p.kind = Kind::kRetention;
  p.keep = P(keep);
  p.action = action;
  p.weight = weight;
  return p;
}

Policy Hold(const std::string& name, std::vector<std::string> custodians, const std::string& case_id = "") {
  Policy p;
  p.name = name;
  p.kind = Kind::kHold;
  p.keep.forever = true;
  p.custodians = std::move(custodians);
  p.case_id = case_id;
  return p;
}

Policy Tag(const std::string& name, const std::string& query) {
  Policy p;
  p.name = name;
  p.kind = Kind::kTag;
  p.query = query;
  p.tag = name;
  return p;
}

MessageFacts Msg(int64_t date, std::vector<std::string> custodians = {}, int64_t first_capture = -1) {
  MessageFacts m;
  m.id = "00aa";
  m.date = date;
  m.first_capture = first_capture < 0 ? date : first_capture;
  m.size = 1000;
  m.custodians = std::move(custodians);
  return m;
}

const Vote* VoteOf(const Decision& d, const std::string& name) {
  for (const Vote& v : d.votes) {
    if (v.policy == name) return &v;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation

constexpr const char* kGoodSet = R"J([
  {"name": "finance-7y", "kind": "retention", "query": "from:(cfo@corp.example)",
   "custodians": ["CFO@Corp.Example"], "keep": "7y", "from": "date", "action": "delete",
   "weight": 10, "retroactive": true},
  {"name": "default", "kind": "retention", "keep": "18mo", "from": "capture", "action": "review"},
  {"name": "case-4711", "kind": "hold", "case": "4711", "custodians": ["ceo@corp.example"]},
  {"name": "spam", "kind": "tag", "tag": "spam", "query": "subject:(viagra OR mortgage)"},
  {"name": "news_letters.2", "kind": "tag", "query": "from:news@example.com", "weight": -3, "retroactive": false}
])J";

TEST(PolicyParse, GoodSetOfAllKindsRoundTripsThroughToJson) {
  Result<std::vector<Policy>> r = ParsePolicySet(kGoodSet, QueryLanguageCheck());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  const std::vector<Policy>& set = *r;
  ASSERT_EQ(set.size(), 5u);

  EXPECT_EQ(set[0].name, "finance-7y");
  EXPECT_EQ(set[0].kind, Kind::kRetention);
  EXPECT_EQ(set[0].query, "from:(cfo@corp.example)");
  EXPECT_EQ(set[0].custodians, std::vector<std::string>{"cfo@corp.example"});  // normalised
  EXPECT_EQ(set[0].keep, P("7y"));
  EXPECT_EQ(set[0].from, From::kDate);
  EXPECT_EQ(set[0].action, Action::kDelete);
  EXPECT_EQ(set[0].weight, 10);
  EXPECT_TRUE(set[0].retroactive);
  EXPECT_FALSE(set[0].catch_all());

  EXPECT_TRUE(set[1].catch_all());
  EXPECT_EQ(set[1].keep.unit, Period::kMonths);
  EXPECT_EQ(set[1].keep.count, 18u);
  EXPECT_EQ(set[1].from, From::kCapture);
  EXPECT_EQ(set[1].action, Action::kReview);
  EXPECT_EQ(set[1].weight, 0);

  EXPECT_EQ(set[2].kind, Kind::kHold);
  EXPECT_EQ(set[2].case_id, "4711");
  EXPECT_TRUE(set[2].keep.forever);

  EXPECT_EQ(set[3].kind, Kind::kTag);
  EXPECT_EQ(set[3].tag, "spam");
  EXPECT_EQ(set[4].tag, "news_letters.2");  // the name when no tag is given
  EXPECT_EQ(set[4].weight, -3);
  EXPECT_FALSE(set[4].retroactive);

  // As written: the fields of each kind and no others; "effective" only WithEffective.
  const json j0 = set[0].ToJson();
  EXPECT_EQ(j0, json::parse(R"J({"name": "finance-7y", "kind": "retention", "query": "from:(cfo@corp.example)",
      "custodians": ["cfo@corp.example"], "keep": "7y", "from": "date", "action": "delete", "weight": 10,
      "retroactive": true})J"));
  EXPECT_FALSE(set[2].ToJson().contains("keep"));
  EXPECT_FALSE(set[3].ToJson().contains("keep"));
  EXPECT_FALSE(j0.contains("effective"));
  Policy with = set[0];
  with.effective = 1234;
  EXPECT_EQ(with.ToJsonWithEffective()["effective"], 1234);
  EXPECT_TRUE(with.SameDefinition(set[0]));

  // ToJson, parsed again, is the same set, and its ToJson the same text.
  json array = json::array();
  for (const Policy& p : set) array.push_back(p.ToJson());
  Result<std::vector<Policy>> again = ParsePolicySet(array.dump(), QueryLanguageCheck());
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  ASSERT_EQ(again->size(), set.size());
  for (size_t i = 0; i < set.size(); ++i) {
    EXPECT_EQ((*again)[i].ToJson(), set[i].ToJson()) << i;
    EXPECT_TRUE((*again)[i].SameDefinition(set[i])) << i;
  }
  // And through ParsePolicyArray directly.
  Result<std::vector<Policy>> direct = ParsePolicyArray(array);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(direct->size(), set.size());
}

TEST(PolicyParse, EmptySetIsValid) {
  Result<std::vector<Policy>> r = ParsePolicySet("[]");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  EXPECT_EQ(ParseError("{}"), "a policy set is a JSON array of policies");
}

// A set of two good policies and `bad` third: refused whole, naming policy 3.
std::string ThirdIsBad(const std::string& bad, const QueryCheck& check = {}) {
  return ParseError(R"([{"name": "a", "kind": "tag"}, {"name": "b", "kind": "retention", "keep": "1y"}, )" + bad + "]",
                    check);
}

TEST(PolicyParse, UnknownKindIsRefusedWithItsPosition) {
  const std::string e = ThirdIsBad(R"({"name": "c", "kind": "archive"})");
  EXPECT_TRUE(Contains(e, "policy 3 (\"c\"): \"kind\"")) << e;
  EXPECT_TRUE(Contains(e, "archive")) << e;
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "c"})"), "policy 3 (\"c\"): \"kind\": is required"));
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "c", "kind": 3})"), "policy 3 (\"c\"): \"kind\": must be a string"));
  EXPECT_TRUE(Contains(ThirdIsBad("42"), "policy 3: a policy is a JSON object"));
}

TEST(PolicyParse, BadPeriodsAreRefused) {
  for (const char* keep : {"3x", "0d", "", "201y", "-1d", "y", "1.5y", "7 y"}) {
    const std::string e = ThirdIsBad(std::string(R"({"name": "c", "kind": "retention", "keep": ")") + keep + "\"}");
    EXPECT_TRUE(Contains(e, "policy 3 (\"c\"): \"keep\": ")) << keep << ": " << e;
  }
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "c", "kind": "retention", "keep": 7})"), "policy 3 (\"c\"): \"keep\": must be a string"));
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "c", "kind": "retention", "keep": "1y", "from": "arrival"})"),
                       "policy 3 (\"c\"): \"from\": \"arrival\""));
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "c", "kind": "retention", "keep": "1y", "action": "shred"})"),
                       "policy 3 (\"c\"): \"action\": \"shred\""));
}

TEST(PolicyParse, UnknownFieldIsRefused) {
  const std::string e = ThirdIsBad(R"({"name": "c", "kind": "tag", "colour": "red"})");
  EXPECT_TRUE(Contains(e, "policy 3 (\"c\"): \"colour\": is not a policy field")) << e;
  // "effective" is the store's, not the author's.
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "c", "kind": "tag", "effective": 5})"), "\"effective\": is not a policy field"));
}

TEST(PolicyParse, DuplicateNamesNameTheSecondPolicy) {
  const std::string e =
      ParseError(R"([{"name": "a", "kind": "tag"}, {"name": "b", "kind": "tag"}, {"name": "a", "kind": "retention", "keep": "1d"}])");
  EXPECT_TRUE(Contains(e, "policy 3 (\"a\"): \"name\": is used by an earlier policy")) << e;
}

TEST(PolicyParse, HoldNeedsTheMailItHolds) {
  std::string e = ThirdIsBad(R"({"name": "h", "kind": "hold"})");
  EXPECT_TRUE(Contains(e, "policy 3 (\"h\")")) << e;
  EXPECT_TRUE(Contains(e, "scope")) << e;
  e = ThirdIsBad(R"({"name": "h", "kind": "hold", "case": "4711"})");
  EXPECT_TRUE(Contains(e, "policy 3 (\"h\")")) << e;
  EXPECT_TRUE(Contains(e, "query or custodians")) << e;
  // With a query or custodians it is a hold.
  EXPECT_EQ(ThirdIsBad(R"({"name": "h", "kind": "hold", "case": "4711", "query": "*"})"), "(accepted)");
  EXPECT_EQ(ThirdIsBad(R"({"name": "h", "kind": "hold", "custodians": ["x@y.example"]})"), "(accepted)");
}

TEST(PolicyParse, RetentionNeedsKeepAndOthersMustNotHaveIt) {
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "r", "kind": "retention"})"), "policy 3 (\"r\"): \"keep\": is required"));
  std::string e = ThirdIsBad(R"({"name": "h", "kind": "hold", "query": "*", "keep": "7y"})");
  EXPECT_TRUE(Contains(e, "policy 3 (\"h\"): \"keep\": is for retentions")) << e;
  e = ThirdIsBad(R"({"name": "t", "kind": "tag", "keep": "7y"})");
  EXPECT_TRUE(Contains(e, "policy 3 (\"t\"): \"keep\": is for retentions")) << e;
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "h", "kind": "hold", "query": "*", "action": "delete"})"), "\"action\": is for retentions"));
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "h", "kind": "hold", "query": "*", "from": "date"})"), "\"from\": is for retentions"));
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "r", "kind": "retention", "keep": "1y", "case": "1"})"), "\"case\": is for holds"));
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "r", "kind": "retention", "keep": "1y", "tag": "x"})"), "\"tag\": is for tag policies"));
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "t", "kind": "tag", "tag": "two words"})"), "policy 3 (\"t\"): \"tag\""));
}

TEST(PolicyParse, WeightMustBeAWholeNumberInRange) {
  for (const char* w : {"1000001", "-1000001", "2.5", "\"5\"", "true", "1e3", "9223372036854775808"}) {
    const std::string e = ThirdIsBad(std::string(R"({"name": "c", "kind": "tag", "weight": )") + w + "}");
    EXPECT_TRUE(Contains(e, "policy 3 (\"c\"): \"weight\": must be a whole number")) << w << ": " << e;
  }
  for (int w : {kMaxWeight, -kMaxWeight, 0}) {
    Result<std::vector<Policy>> r = ParsePolicySet(R"([{"name": "c", "kind": "tag", "weight": )" + std::to_string(w) + "}]");
    ASSERT_TRUE(r.ok()) << w;
    EXPECT_EQ((*r)[0].weight, w);
  }
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"name": "c", "kind": "tag", "retroactive": "no"})"), "\"retroactive\": must be true or false"));
}

// Regression: the first ParsePolicy read the weight with get<int64_t>() whatever its type, and
// nlohmann keeps 18446744073709551615 as an unsigned number (is_number_integer() is true) that
// get<int64_t>() wraps to -1, within range: `"weight": 18446744073709551615` was accepted as -1
// (18446744073709551611 as -5). Numbers beyond a double are refused, not a crash.
TEST(PolicyParse, WeightBeyondInt64IsRefusedNotWrapped) {
  for (const char* w : {"18446744073709551615", "18446744073709551611", "1000001", "1e999", "-1e999"}) {
    Result<std::vector<Policy>> r = ParsePolicySet(std::string(R"([{"name": "c", "kind": "tag", "weight": )") + w + "}]");
    EXPECT_FALSE(r.ok()) << w << " was accepted as weight " << (r.ok() ? (*r)[0].weight : 0);
  }
}

TEST(PolicyParse, NestingIsBounded) {
  // array > policy > custodians > address is as deep as a set goes.
  std::string deep = "[{\"name\": \"c\", \"kind\": \"tag\", \"query\": " + std::string(100000, '[') + std::string(100000, ']') + "}]";
  std::string e = ParseError(deep);
  EXPECT_TRUE(Contains(e, "nested at most")) << e.substr(0, 200);
  e = ParseError(R"([{"name": "c", "kind": "tag", "custodians": [["a@b.example"]]}])");
  EXPECT_NE(e, "(accepted)");
  e = ParseError(R"([{"name": "c", "kind": "tag", "query": {"a": 1}}])");
  EXPECT_TRUE(Contains(e, "policy 1 (\"c\"): \"query\": must be a string")) << e;
  EXPECT_EQ(ParseError(R"([{"name": "c", "kind": "tag", "custodians": ["a@b.example"]}])"), "(accepted)");
}

TEST(PolicyParse, TagMustBeATag) {
  for (const char* tag : {"Spam", "two words", "a\"b", "(x)", ""}) {
    const std::string e = ThirdIsBad(json{{"name", "t"}, {"kind", "tag"}, {"tag", tag}}.dump());
    if (std::string(tag).empty()) {
      EXPECT_EQ(e, "(accepted)");  // none given: the policy's name
    } else {
      EXPECT_TRUE(Contains(e, "policy 3 (\"t\"): \"tag\": ")) << tag << ": " << e;
    }
  }
  EXPECT_EQ(ThirdIsBad(R"({"name": "t", "kind": "tag", "tag": "client:acme-2"})"), "(accepted)");
}

TEST(PolicyParse, CustodiansMustBeAddresses) {
  for (const char* c : {R"(["not-an-address"])", R"(["@corp.example"])", R"(["alice@"])", R"(["a b@corp.example"])",
                        R"(["a@b.example", 7])", R"("alice@corp.example")"}) {
    const std::string e = ThirdIsBad(std::string(R"({"name": "c", "kind": "tag", "custodians": )") + c + "}");
    EXPECT_TRUE(Contains(e, "policy 3 (\"c\"): \"custodians\": ")) << c << ": " << e;
  }
  // Normalised and deduplicated.
  Result<std::vector<Policy>> r =
      ParsePolicySet(R"([{"name": "c", "kind": "tag", "custodians": ["<Alice@Corp.Example>", "alice@corp.example", "bob@corp.example"]}])");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ((*r)[0].custodians, (std::vector<std::string>{"alice@corp.example", "bob@corp.example"}));
}

TEST(PolicyParse, InvalidNamesAreRefused) {
  for (const char* n : {R"("")", R"("Finance")", R"("-lead")", R"(".lead")", R"("has space")", R"("a/b")", R"("ä")", "7", "null"}) {
    const std::string e = ThirdIsBad(std::string(R"({"name": )") + n + R"(, "kind": "tag"})");
    EXPECT_TRUE(Contains(e, "policy 3: \"name\": ")) << n << ": " << e;
  }
  EXPECT_TRUE(Contains(ThirdIsBad(R"({"kind": "tag"})"), "policy 3: \"name\": is required"));
  EXPECT_EQ(ThirdIsBad(R"({"name": "0a.b_c-d", "kind": "tag"})"), "(accepted)");
}

TEST(PolicyParse, JsonSyntaxErrorNamesLineAndColumn) {
  // Line 3 starts a policy without the comma the one on line 2 needed: the error is the "{" at
  // line 3, column 3.
  const std::string missing_comma =
      "[\n"
      "  {\"name\": \"a\", \"kind\": \"tag\"}\n"
      "  {\"name\": \"b\", \"kind\": \"tag\"}\n"
      "]\n";
  std::string e = ParseError(missing_comma);
  EXPECT_EQ(e.rfind("line 3, column 3: ", 0), 0u) << e;
  // Within an object: `"b" "kind"` on line 3; the offending token starts at column 16.
  const std::string inside =
      "[\n"
      "  {\"name\": \"a\", \"kind\": \"tag\"},\n"
      "  {\"name\": \"b\" \"kind\": \"tag\"}\n"
      "]\n";
  e = ParseError(inside);
  EXPECT_EQ(e.rfind("line 3, column ", 0), 0u) << e;
  int line = 0, column = 0;
  ASSERT_EQ(std::sscanf(e.c_str(), "line %d, column %d", &line, &column), 2) << e;
  EXPECT_GE(column, 16) << e;  // at the unexpected string "kind" (columns 16 to 21)
  EXPECT_LE(column, 21) << e;
  // An unterminated array at the end of line 1.
  e = ParseError("[{\"name\": \"a\", \"kind\": \"tag\"}");
  EXPECT_EQ(e.rfind("line 1, column ", 0), 0u) << e;
  e = ParseError("");
  EXPECT_EQ(e.rfind("line 1, column 1: ", 0), 0u) << e;
}

TEST(PolicyParse, QueryIsCheckedWithTheQueryLanguage) {
  const std::string bad = R"({"name": "c", "kind": "retention", "keep": "1y", "query": "subject:(a OR b"})";
  const std::string e = ThirdIsBad(bad, QueryLanguageCheck());
  EXPECT_TRUE(Contains(e, "policy 3 (\"c\"): \"query\": ")) << e;
  EXPECT_TRUE(Contains(e, ")")) << e;  // the parser's own words: ")" expected
  // Without a check the text is not parsed.
  EXPECT_EQ(ThirdIsBad(bad), "(accepted)");
  EXPECT_EQ(ThirdIsBad(R"J({"name": "c", "kind": "tag", "query": "subject:(a OR b)"})J", QueryLanguageCheck()), "(accepted)");
  // An empty (or blank) query is every message, and is not checked.
  Result<std::vector<Policy>> r = ParsePolicySet(R"([{"name": "c", "kind": "tag", "query": "   "}])", QueryLanguageCheck());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE((*r)[0].query.empty());
}

TEST(PolicyParse, AtMostMaxPolicies) {
  auto set_of = [](size_t n) {
    json a = json::array();
    for (size_t i = 0; i < n; ++i) a.push_back(json{{"name", "p" + std::to_string(i)}, {"kind", "tag"}});
    return a.dump();
  };
  Result<std::vector<Policy>> r = ParsePolicySet(set_of(kMaxPolicies));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->size(), kMaxPolicies);
  const std::string e = ParseError(set_of(kMaxPolicies + 1));
  EXPECT_TRUE(Contains(e, std::to_string(kMaxPolicies))) << e;
}

TEST(PolicyParse, NameOfMaxBytes) {
  const std::string name(kMaxNameBytes, 'n');
  Result<std::vector<Policy>> r = ParsePolicySet(json::array({json{{"name", name}, {"kind", "tag"}}}).dump());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ((*r)[0].name, name);
  const std::string e = ParseError(json::array({json{{"name", name + "n"}, {"kind", "tag"}}}).dump());
  EXPECT_TRUE(Contains(e, "policy 1: \"name\": ")) << e;
}

TEST(PolicyParse, QueryOfMaxBytes) {
  // Words of 40 letters (the query language takes words up to 64 bytes), the last one cut to
  // make exactly kMaxQueryBytes.
  std::string q;
  for (int i = 0; q.size() < kMaxQueryBytes; ++i) {
    if (!q.empty()) q += ' ';
    q += std::string(40, static_cast<char>('a' + i % 26));
  }
  q.resize(kMaxQueryBytes);
  if (q.back() == ' ') q.back() = 'z';
  ASSERT_EQ(q.size(), kMaxQueryBytes);
  auto set = [](const std::string& query) {
    return json::array({json{{"name", "long"}, {"kind", "retention"}, {"keep", "1y"}, {"query", query}}}).dump();
  };
  for (const QueryCheck& check : {QueryCheck(), QueryLanguageCheck()}) {
    Result<std::vector<Policy>> r = ParsePolicySet(set(q), check);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ((*r)[0].query, q);
    const std::string e = ParseError(set(q + "z"), check);
    EXPECT_TRUE(Contains(e, "policy 1 (\"long\"): \"query\": is longer than 4096 bytes")) << e;
  }
}

// ---------------------------------------------------------------------------------------------
// Periods

TEST(PolicyPeriod, ParsesEveryUnitAndForever) {
  struct Case {
    const char* text;
    Period::Unit unit;
    uint32_t count;
  };
  for (const Case& c : {Case{"30d", Period::kDays, 30}, Case{"6w", Period::kWeeks, 6}, Case{"18mo", Period::kMonths, 18},
                        Case{"7y", Period::kYears, 7}, Case{"1d", Period::kDays, 1}, Case{"200y", Period::kYears, 200}}) {
    Result<Period> p = ParsePeriod(c.text);
    ASSERT_TRUE(p.ok()) << c.text << ": " << p.error().ToString();
    EXPECT_FALSE(p->forever) << c.text;
    EXPECT_EQ(p->unit, c.unit) << c.text;
    EXPECT_EQ(p->count, c.count) << c.text;
    EXPECT_EQ(p->ToString(), c.text);
  }
  Result<Period> f = ParsePeriod("forever");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->forever);
  EXPECT_EQ(f->ToString(), "forever");
  for (const char* bad : {"3x", "0d", "", "201y", "0y", "d", "forever!", "7Y", "-7y", "99999999999999999999d"}) {
    EXPECT_FALSE(ParsePeriod(bad).ok()) << bad;
  }
}

// Regression: the first ParsePeriod counted a month as 31 days and a year as 366 against
// 200 * 366 days, so "2400mo" (exactly 200 years, policy.h: "1 to 200 years in all") was refused
// as "longer than 200 years" while "73200d" and "10457w" (more than 200 years) were accepted.
TEST(PolicyPeriod, TwoHundredYearsInAnyUnit) {
  for (const char* ok : {"2400mo", "200y", "73050d", "10435w"}) {
    Result<Period> p = ParsePeriod(ok);
    EXPECT_TRUE(p.ok()) << ok << ": " << p.error().message();
  }
  for (const char* bad : {"2401mo", "201y", "73200d", "10457w"}) {
    Result<Period> p = ParsePeriod(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_TRUE(Contains(p.error().message(), "200 years")) << bad << ": " << p.error().message();
  }
}

TEST(PolicyPeriod, EndCountsInCalendarTerms) {
  EXPECT_EQ(P("7y").End(Utc(2002, 8, 28, 10)), Utc(2009, 8, 28, 10));
  EXPECT_EQ(P("1y").End(Utc(2004, 2, 29, 13, 14, 15)), Utc(2005, 2, 28, 13, 14, 15));
  EXPECT_EQ(P("4y").End(Utc(2004, 2, 29)), Utc(2008, 2, 29));
  EXPECT_EQ(P("1mo").End(Utc(2003, 1, 31, 23, 59, 59)), Utc(2003, 2, 28, 23, 59, 59));
  EXPECT_EQ(P("1mo").End(Utc(2004, 1, 31)), Utc(2004, 2, 29));
  EXPECT_EQ(P("1mo").End(Utc(2003, 3, 31)), Utc(2003, 4, 30));
  EXPECT_EQ(P("18mo").End(Utc(2002, 8, 31, 6)), Utc(2004, 2, 29, 6));
  EXPECT_EQ(P("1mo").End(Utc(2003, 12, 15)), Utc(2004, 1, 15));
  EXPECT_EQ(P("100y").End(Utc(2000, 2, 29)), Utc(2100, 2, 28));
  EXPECT_EQ(P("2w").End(Utc(2003, 3, 1, 5)), Utc(2003, 3, 1, 5) + 14 * 86400);
  EXPECT_EQ(P("2w").End(Utc(2003, 3, 1, 5)), Utc(2003, 3, 15, 5));
  EXPECT_EQ(P("30d").End(Utc(2004, 2, 1)), Utc(2004, 3, 2));
  EXPECT_EQ(P("forever").End(Utc(2002, 8, 28)), INT64_MAX);
  // Before 1970 too (a Date header can say so).
  EXPECT_EQ(P("1y").End(Utc(1968, 2, 29, 12)), Utc(1969, 2, 28, 12));
  EXPECT_EQ(P("1mo").End(Utc(1969, 12, 31, 23)), Utc(1970, 1, 31, 23));
}

// ---------------------------------------------------------------------------------------------
// Arbitration, one rule at a time

const int64_t kNow = Utc(2024, 6, 1, 12);
const std::string kA = "a@corp.example", kB = "b@corp.example";

TEST(PolicyEngine, HoldKeepsWhateverRetentionsSay) {
  Policy del = Retention("purge-1d", "1d", Action::kDelete, 1000000);
  Policy hold = Hold("case-1", {kA}, "1");
  const MessageFacts m = Msg(Utc(2010, 1, 1), {kA, kB});
  Decision d = Decide({del, hold}, {true, true}, m, kNow);
  EXPECT_EQ(d.verdict, Verdict::kHeld);
  EXPECT_EQ(d.holds, std::vector<std::string>{"case-1"});
  ASSERT_NE(VoteOf(d, "case-1"), nullptr);
  EXPECT_EQ(VoteOf(d, "case-1")->vote, "keep");
  EXPECT_EQ(VoteOf(d, "purge-1d")->vote, "delete");
  // Without the hold, the same message is purgeable.
  EXPECT_EQ(Decide({del}, {true}, m, kNow).verdict, Verdict::kPurgeable);
  // A hold whose custodian the message lacks does not hold it.
  EXPECT_EQ(Decide({del, Hold("case-2", {"c@corp.example"})}, {true, true}, m, kNow).verdict, Verdict::kPurgeable);

  const json j = d.ToJson();
  EXPECT_EQ(j["outcome"], "held");
  ASSERT_TRUE(j["votes"].is_array());
  ASSERT_EQ(j["votes"].size(), 2u);
  EXPECT_EQ(j["votes"][0]["policy"], "purge-1d");
  EXPECT_EQ(j["votes"][0]["vote"], "delete");
  EXPECT_EQ(j["votes"][0]["weight"], 1000000);
  EXPECT_EQ(j["votes"][1]["policy"], "case-1");
  EXPECT_EQ(j["votes"][1]["vote"], "keep");
  EXPECT_EQ(j["votes"][1]["weight"], 0);
}

TEST(PolicyEngine, LongestRetentionWins) {
  Policy one = Retention("one-year", "1y");
  Policy ten = Retention("ten-years", "10y", Action::kDelete);
  one.query = "q1";
  ten.query = "q2";
  const int64_t date = Utc(2019, 3, 10, 8);  // five years before kNow
  Decision d = Decide({one, ten}, {true, true}, Msg(date), kNow);
  EXPECT_EQ(d.verdict, Verdict::kKeep);
  EXPECT_EQ(d.keep_until, Utc(2029, 3, 10, 8));
  EXPECT_EQ(d.deciding, std::vector<std::string>{"ten-years"});
  EXPECT_EQ(VoteOf(d, "one-year")->vote, "delete");
  EXPECT_EQ(VoteOf(d, "one-year")->until, Utc(2020, 3, 10, 8));
  EXPECT_EQ(VoteOf(d, "ten-years")->vote, "keep");
  const json j = d.ToJson();
  EXPECT_EQ(j["outcome"], "keep");
  EXPECT_EQ(j["keep_until"], "2029-03-10T08:00:00Z");
  // The order of the set does not matter.
  EXPECT_EQ(Decide({ten, one}, {true, true}, Msg(date), kNow).keep_until, Utc(2029, 3, 10, 8));
  // At its end the period has run out (End is the first second past it).
  EXPECT_EQ(Decide({one, ten}, {true, true}, Msg(date), Utc(2029, 3, 10, 8)).verdict, Verdict::kPurgeable);
  EXPECT_EQ(Decide({one, ten}, {true, true}, Msg(date), Utc(2029, 3, 10, 8) - 1).verdict, Verdict::kKeep);
}

TEST(PolicyEngine, FromCaptureCountsFromTheFirstCapture) {
  Policy r = Retention("r", "1y");
  r.from = From::kCapture;
  const MessageFacts m = Msg(Utc(2010, 1, 1), {}, Utc(2023, 9, 1));
  Decision d = Decide({r}, {true}, m, kNow);
  EXPECT_EQ(d.verdict, Verdict::kKeep);
  EXPECT_EQ(d.keep_until, Utc(2024, 9, 1));
  r.from = From::kDate;
  EXPECT_EQ(Decide({r}, {true}, m, kNow).verdict, Verdict::kPurgeable);
}

TEST(PolicyEngine, KeptForOneCustodianIsKept) {
  Policy a = Retention("a-10y", "10y");
  a.custodians = {kA};
  Policy b = Retention("b-1y", "1y");
  b.custodians = {kB};
  Policy all = Retention("default-1y", "1y");  // the catch-all, run out too
  const int64_t date = Utc(2019, 6, 1);
  Decision shared = Decide({a, b, all}, {true, true, true}, Msg(date, {kB, kA}), kNow);
  EXPECT_EQ(shared.verdict, Verdict::kKeep);
  EXPECT_EQ(shared.keep_until, Utc(2029, 6, 1));
  EXPECT_EQ(VoteOf(shared, "b-1y")->vote, "delete");
  EXPECT_EQ(VoteOf(shared, "a-10y")->vote, "keep");
  // B's own copy alone (the same bytes, had A not been a custodian) is purgeable.
  Decision b_only = Decide({a, b, all}, {true, true, true}, Msg(date, {kB}), kNow);
  EXPECT_EQ(b_only.verdict, Verdict::kPurgeable);
  EXPECT_EQ(VoteOf(b_only, "a-10y")->vote, "none");
}

TEST(PolicyEngine, ExplicitBeatsCatchAllOnceAllRanOut) {
  Policy explicit_delete = Retention("explicit", "1y", Action::kDelete, 0);
  explicit_delete.query = "q";
  Policy catch_all_review = Retention("catch-all", "2y", Action::kReview, 100);
  const MessageFacts m = Msg(Utc(2019, 1, 1));
  Decision d = Decide({explicit_delete, catch_all_review}, {true, true}, m, kNow);
  EXPECT_EQ(d.verdict, Verdict::kPurgeable);
  EXPECT_EQ(d.deciding, std::vector<std::string>{"explicit"});
  const Vote* c = VoteOf(d, "catch-all");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->vote, "review");
  EXPECT_FALSE(c->counted);
  EXPECT_TRUE(VoteOf(d, "explicit")->counted);
  const json j = d.ToJson();
  EXPECT_EQ(j["outcome"], "purgeable");
  EXPECT_EQ(j["votes"][1]["counted"], false);
  // When the explicit one does not apply, the catch-all decides: review.
  Decision alone = Decide({explicit_delete, catch_all_review}, {false, true}, m, kNow);
  EXPECT_EQ(alone.verdict, Verdict::kReview);
  EXPECT_TRUE(VoteOf(alone, "catch-all")->counted);
  EXPECT_EQ(VoteOf(alone, "explicit")->vote, "none");
  // While the catch-all still runs it keeps (the longest wins), explicit or not.
  Decision running = Decide({explicit_delete, catch_all_review}, {true, true}, m, Utc(2020, 6, 1));
  EXPECT_EQ(running.verdict, Verdict::kKeep);
  EXPECT_EQ(running.keep_until, Utc(2021, 1, 1));
}

TEST(PolicyEngine, WeightsDecideBetweenDeleteAndReview) {
  auto decide = [](int delete_weight, int review_weight) {
    Policy del = Retention("del", "1y", Action::kDelete, delete_weight);
    Policy rev = Retention("rev", "1y", Action::kReview, review_weight);
    del.query = "q1";
    rev.custodians = {kA};
    return Decide({del, rev}, {true, true}, Msg(Utc(2015, 1, 1), {kA}), kNow).verdict;
  };
  EXPECT_EQ(decide(5, 3), Verdict::kPurgeable);
  EXPECT_EQ(decide(3, 3), Verdict::kReview);  // a tie is review
  EXPECT_EQ(decide(3, 5), Verdict::kReview);
  EXPECT_EQ(decide(0, 0), Verdict::kReview);
  EXPECT_EQ(decide(-1, -3), Verdict::kPurgeable);
  // With no review vote it is delete, whatever the weight.
  Policy del = Retention("del", "1y", Action::kDelete, -5);
  EXPECT_EQ(Decide({del}, {true}, Msg(Utc(2015, 1, 1)), kNow).verdict, Verdict::kPurgeable);
  // Two deletes add up against one review.
  Policy d1 = Retention("d1", "1y", Action::kDelete, 2), d2 = Retention("d2", "1y", Action::kDelete, 2),
         r1 = Retention("r1", "1y", Action::kReview, 3);
  EXPECT_EQ(Decide({d1, d2, r1}, {true, true, true}, Msg(Utc(2015, 1, 1)), kNow).verdict, Verdict::kPurgeable);
  EXPECT_EQ(Decide({d1, r1}, {true, true}, Msg(Utc(2015, 1, 1)), kNow).verdict, Verdict::kReview);
}

TEST(PolicyEngine, NoRetentionKeepsForever) {
  Decision d = Decide({}, {}, Msg(Utc(1990, 1, 1)), kNow);
  EXPECT_EQ(d.verdict, Verdict::kKeep);
  EXPECT_EQ(d.keep_until, INT64_MAX);
  EXPECT_EQ(d.ToJson()["keep_until"], "forever");
  // A retention that does not apply is no retention.
  Policy r = Retention("r", "1d");
  r.query = "q";
  Decision n = Decide({r, Tag("t", "")}, {false, true}, Msg(Utc(1990, 1, 1)), kNow);
  EXPECT_EQ(n.verdict, Verdict::kKeep);
  EXPECT_EQ(n.keep_until, INT64_MAX);
}

TEST(PolicyEngine, NotRetroactivePolicySparesEarlierMail) {
  Policy r = Retention("new-rule", "1y");
  r.retroactive = false;
  r.effective = Utc(2023, 1, 1);
  Decision before = Decide({r}, {true}, Msg(Utc(2015, 1, 1), {}, Utc(2022, 12, 31, 23, 59, 59)), kNow);
  EXPECT_EQ(VoteOf(before, "new-rule")->vote, "none");
  EXPECT_FALSE(VoteOf(before, "new-rule")->counted);
  EXPECT_EQ(before.verdict, Verdict::kKeep);
  EXPECT_EQ(before.keep_until, INT64_MAX);
  // At or after the moment it came into force, it applies.
  Decision at = Decide({r}, {true}, Msg(Utc(2015, 1, 1), {}, Utc(2023, 1, 1)), kNow);
  EXPECT_EQ(VoteOf(at, "new-rule")->vote, "delete");
  EXPECT_EQ(at.verdict, Verdict::kPurgeable);
  // A retroactive one applies to earlier mail.
  r.retroactive = true;
  EXPECT_EQ(Decide({r}, {true}, Msg(Utc(2015, 1, 1), {}, Utc(2016, 1, 1)), kNow).verdict, Verdict::kPurgeable);
}

TEST(PolicyEngine, TagAbstains) {
  Policy t = Tag("spam", "q");
  t.weight = 1000;
  Decision d = Decide({t}, {true}, Msg(Utc(2000, 1, 1)), kNow);
  EXPECT_EQ(VoteOf(d, "spam")->vote, "abstain");
  EXPECT_FALSE(VoteOf(d, "spam")->counted);
  EXPECT_EQ(d.verdict, Verdict::kKeep);
  EXPECT_EQ(d.keep_until, INT64_MAX);
  Policy r = Retention("r", "1y", Action::kReview, 1);
  EXPECT_EQ(Decide({t, r}, {true, true}, Msg(Utc(2000, 1, 1)), kNow).verdict, Verdict::kReview);
  EXPECT_EQ(Decide({t}, {false}, Msg(Utc(2000, 1, 1)), kNow).votes[0].vote, "none");
}

TEST(PolicyEngine, CustodianScopedPolicyNeedsThatCustodian) {
  Policy r = Retention("a-only", "1y");
  r.custodians = {kA};
  for (const std::vector<std::string>& custodians : {std::vector<std::string>{}, std::vector<std::string>{kB}}) {
    Decision d = Decide({r}, {true}, Msg(Utc(2010, 1, 1), custodians), kNow);
    EXPECT_EQ(VoteOf(d, "a-only")->vote, "none");
    EXPECT_EQ(d.verdict, Verdict::kKeep);
    EXPECT_EQ(d.keep_until, INT64_MAX);
  }
  EXPECT_EQ(Decide({r}, {true}, Msg(Utc(2010, 1, 1), {kB, kA}), kNow).verdict, Verdict::kPurgeable);
  // With a query too, both must match.
  r.query = "q";
  EXPECT_EQ(VoteOf(Decide({r}, {false}, Msg(Utc(2010, 1, 1), {kA}), kNow), "a-only")->vote, "none");
  EXPECT_FALSE(Applies(r, false, Msg(Utc(2010, 1, 1), {kA})));
  EXPECT_TRUE(Applies(r, true, Msg(Utc(2010, 1, 1), {kA})));
}

TEST(PolicyEngine, DecisionJsonCarriesOutcomeAndEveryVote) {
  Policy r = Retention("r", "7y", Action::kReview, 4);
  Policy t = Tag("t", "q");
  Policy h = Hold("h", {kB});
  Decision d = Decide({r, t, h}, {true, true, true}, Msg(Utc(2002, 8, 28, 10), {kA}), kNow);
  const json j = d.ToJson();
  EXPECT_EQ(j["outcome"], "review");
  ASSERT_EQ(j["votes"].size(), 3u);
  const std::vector<std::string> names = {"r", "t", "h"}, votes = {"review", "abstain", "none"};
  const std::vector<int> weights = {4, 0, 0};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(j["votes"][i]["policy"], names[i]);
    EXPECT_EQ(j["votes"][i]["vote"], votes[i]);
    EXPECT_EQ(j["votes"][i]["weight"], weights[i]);
  }
  EXPECT_EQ(j["votes"][0]["until"], "2009-08-28T10:00:00Z");
  EXPECT_FALSE(j.value("reason", "").empty());
}

// Regression: the first Decide started the longest end at `until = 0`, so retentions that all
// ran out before 1970 (a Date header of 1969, a short keep) were taken to run until 1970-01-01:
// the reason named that day, and with `now` before 1970 while such a retention ran, `deciding`
// stayed empty and d.deciding.front() crashed (SIGSEGV) with keep_until 0. Minimal input: one
// catch-all retention {"keep": "30d"}, a message dated 1969-01-01, now = 1969-01-15. Run in a
// child process so that a crash fails this test only.
TEST(PolicyEngine, RetentionsThatAllEndBefore1970) {
  const Policy r = Retention("r", "30d");
  const MessageFacts m = Msg(Utc(1969, 1, 1));
  Decision d = Decide({r}, {true}, m, kNow);
  EXPECT_EQ(d.verdict, Verdict::kPurgeable);
  EXPECT_EQ(VoteOf(d, "r")->until, Utc(1969, 1, 31));
  EXPECT_TRUE(Contains(d.reason, "1969-01-31")) << d.reason;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const Decision e = Decide({r}, {true}, m, Utc(1969, 1, 15));
        const bool right = e.verdict == Verdict::kKeep && e.keep_until == Utc(1969, 1, 31) &&
                           e.deciding == std::vector<std::string>{"r"};
        std::_Exit(right ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "")
      << "Decide while a retention that ends before 1970 runs (now 1969-01-15): crashed, or keep_until is not its end";
}

// ---------------------------------------------------------------------------------------------
// The property test: random sets and messages against an oracle of the header's rules.

// Days in a month by the C library: from its first to the next month's first.
int64_t OracleDaysInMonth(int64_t year_since_1900, int month0) {
  struct tm first = {};
  first.tm_year = static_cast<int>(year_since_1900);
  first.tm_mon = month0;
  first.tm_mday = 1;
  struct tm next = first;
  next.tm_mon += 1;  // timegm normalises December + 1
  return (static_cast<int64_t>(timegm(&next)) - static_cast<int64_t>(timegm(&first))) / 86400;
}

// A period's end, by gmtime/timegm: add the months to the broken-down time and clamp the day.
int64_t OracleEnd(const Period& p, int64_t start) {
  if (p.forever) return INT64_MAX;
  if (p.unit == Period::kDays) return start + int64_t{86400} * p.count;
  if (p.unit == Period::kWeeks) return start + int64_t{7 * 86400} * p.count;
  const time_t t = static_cast<time_t>(start);
  struct tm tm;
  gmtime_r(&t, &tm);
  const int64_t months = static_cast<int64_t>(p.count) * (p.unit == Period::kYears ? 12 : 1);
  int64_t total = static_cast<int64_t>(tm.tm_year) * 12 + tm.tm_mon + months;
  int64_t year = total / 12, month0 = total % 12;
  if (month0 < 0) month0 += 12, year -= 1;
  struct tm out = {};
  out.tm_year = static_cast<int>(year);
  out.tm_mon = static_cast<int>(month0);
  out.tm_mday = static_cast<int>(std::min<int64_t>(tm.tm_mday, OracleDaysInMonth(year, static_cast<int>(month0))));
  out.tm_hour = tm.tm_hour;
  out.tm_min = tm.tm_min;
  out.tm_sec = tm.tm_sec;
  return static_cast<int64_t>(timegm(&out));
}

struct OracleAnswer {
  Verdict verdict = Verdict::kKeep;
  int64_t keep_until = INT64_MAX;
  bool hold_applies = false, retention_runs = false;
  std::vector<bool> applies;
  std::vector<int64_t> ends;          // retentions that apply
  std::vector<bool> counted;          // retentions that apply
  std::vector<std::string> holds, deciding;
};

OracleAnswer Oracle(const std::vector<Policy>& ps, const std::vector<bool>& matched, const MessageFacts& m, int64_t now) {
  OracleAnswer a;
  a.applies.resize(ps.size());
  a.ends.assign(ps.size(), 0);
  a.counted.assign(ps.size(), false);
  std::vector<size_t> retentions, explicit_retentions;
  for (size_t i = 0; i < ps.size(); ++i) {
    const Policy& p = ps[i];
    bool custodian = p.custodians.empty();
    for (const std::string& c : p.custodians) custodian |= std::count(m.custodians.begin(), m.custodians.end(), c) > 0;
    a.applies[i] = matched[i] && custodian && (p.retroactive || m.first_capture >= p.effective);
    if (!a.applies[i]) continue;
    if (p.kind == Kind::kHold) a.hold_applies = true, a.holds.push_back(p.name);
    if (p.kind == Kind::kRetention) {
      a.ends[i] = OracleEnd(p.keep, p.from == From::kDate ? m.date : m.first_capture);
      retentions.push_back(i);
      if (!p.query.empty() || !p.custodians.empty()) explicit_retentions.push_back(i);
    }
  }
  int64_t last = INT64_MIN;
  for (size_t i : retentions) {
    last = std::max(last, a.ends[i]);
    a.retention_runs |= now < a.ends[i];
  }
  const std::vector<size_t>& counting = explicit_retentions.empty() ? retentions : explicit_retentions;
  for (size_t i : retentions) {
    a.counted[i] = a.retention_runs || std::count(counting.begin(), counting.end(), i) > 0;
  }
  if (a.hold_applies) {
    a.verdict = Verdict::kHeld;
    a.deciding = a.holds;
  } else if (a.retention_runs) {
    a.verdict = Verdict::kKeep;
    a.keep_until = last;
    for (size_t i : retentions) {
      if (a.ends[i] == last) a.deciding.push_back(ps[i].name);
    }
  } else if (retentions.empty()) {
    a.verdict = Verdict::kKeep;
    a.keep_until = INT64_MAX;
  } else {
    int64_t del = 0, review = 0;
    bool any_review = false;
    for (size_t i : counting) {
      a.deciding.push_back(ps[i].name);
      if (ps[i].action == Action::kReview) review += ps[i].weight, any_review = true;
      else del += ps[i].weight;
    }
    a.verdict = !any_review || del > review ? Verdict::kPurgeable : Verdict::kReview;
  }
  return a;
}

std::string Describe(const std::vector<Policy>& ps, const std::vector<bool>& matched, const MessageFacts& m, int64_t now,
                     const Decision& d) {
  std::ostringstream o;
  for (size_t i = 0; i < ps.size(); ++i) o << "  " << ps[i].ToJsonWithEffective().dump() << " matched=" << matched[i] << "\n";
  json cust = m.custodians;
  o << "  message: date=" << m.date << " first_capture=" << m.first_capture << " custodians=" << cust.dump() << "\n";
  o << "  now=" << now << "\n  decision: " << d.ToJson().dump() << " keep_until=" << d.keep_until << "\n";
  return o.str();
}

TEST(PolicyProperty, RandomScenariosAgreeWithTheOracle) {
  constexpr uint64_t kSeed = 0x6d61696c7661756cULL;  // "mailvaul"
  constexpr int kScenarios = 10000;
  std::mt19937_64 rng(kSeed);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto chance = [&](int percent) { return pick(0, 99) < percent; };
  const std::vector<std::string> pool = {"alice@corp.example", "bob@corp.example", "carol@corp.example", "dave@corp.example"};
  auto subset = [&](size_t min, size_t max) {
    std::vector<std::string> all = pool;
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(static_cast<size_t>(pick(static_cast<int64_t>(min), static_cast<int64_t>(max))));
    return all;
  };
  const int64_t kLow = Utc(1965, 1, 1), kHigh = Utc(2040, 1, 1);
  // Mostly recent mail; some from either side of 1900 and 2100, which are not leap years.
  auto date = [&] { return chance(85) ? pick(kLow, kHigh) : pick(Utc(1890, 1, 1), Utc(2110, 1, 1)); };

  const auto started = std::chrono::steady_clock::now();
  int failures = 0;
  uint64_t decisions = 0, verdicts[4] = {0, 0, 0, 0};
  for (int s = 0; s < kScenarios && failures < 10; ++s) {
    std::vector<Policy> ps(static_cast<size_t>(pick(1, 8)));
    for (size_t i = 0; i < ps.size(); ++i) {
      Policy& p = ps[i];
      p.name = "p" + std::to_string(i);
      const int64_t k = pick(0, 99);
      p.kind = k < 70 ? Kind::kRetention : k < 85 ? Kind::kHold : Kind::kTag;
      p.query = chance(50) ? "q" + std::to_string(i) : "";
      if (chance(50)) p.custodians = subset(1, 4);
      if (p.kind == Kind::kHold && p.catch_all()) p.query = "q" + std::to_string(i);  // a hold needs a scope
      if (p.kind == Kind::kHold && chance(30)) p.case_id = std::to_string(pick(1, 9999));
      if (p.kind == Kind::kTag) p.tag = p.name;
      if (p.kind == Kind::kRetention) {
        if (chance(5)) {
          p.keep.forever = true;
        } else {
          switch (pick(0, 3)) {
            case 0: p.keep.unit = Period::kDays, p.keep.count = static_cast<uint32_t>(pick(1, 5000)); break;
            case 1: p.keep.unit = Period::kWeeks, p.keep.count = static_cast<uint32_t>(pick(1, 700)); break;
            case 2: p.keep.unit = Period::kMonths, p.keep.count = static_cast<uint32_t>(pick(1, 240)); break;
            default: p.keep.unit = Period::kYears, p.keep.count = static_cast<uint32_t>(pick(1, 30)); break;
          }
        }
        p.from = chance(50) ? From::kDate : From::kCapture;
        p.action = chance(50) ? Action::kDelete : Action::kReview;
      } else if (p.kind == Kind::kHold) {
        p.keep.forever = true;
      }
      p.weight = static_cast<int>(pick(-3, 5));
      p.retroactive = chance(70);
      p.effective = pick(Utc(1995, 1, 1), Utc(2030, 1, 1));
    }
    const int messages = static_cast<int>(pick(1, 5));
    const int64_t scenario_now = pick(Utc(1995, 1, 1), kHigh);
    for (int mi = 0; mi < messages && failures < 10; ++mi) {
      MessageFacts m;
      m.id = std::to_string(s) + "." + std::to_string(mi);
      m.date = date();
      // At times to the second, usually later, sometimes before the Date (a clock off).
      const int64_t c = pick(0, 9);
      m.first_capture = c == 0 ? m.date : c == 1 ? m.date - pick(1, 86400 * 400) : m.date + pick(1, int64_t{86400} * 365 * 4);
      m.custodians = subset(0, 3);
      std::vector<bool> matched(ps.size());
      for (size_t i = 0; i < ps.size(); ++i) {
        matched[i] = ps[i].query.empty() || chance(60);
        // Sometimes exactly at the moment a non-retroactive policy came into force.
        if (!ps[i].retroactive && chance(10)) ps[i].effective = m.first_capture + pick(-1, 1);
      }
      int64_t now = scenario_now;
      // Sometimes exactly at (or one second before) a retention's end: End is the first second
      // at which the period has run out (before 1970 too, for mail dated then).
      if (chance(25)) {
        const Policy& p = ps[static_cast<size_t>(pick(0, static_cast<int64_t>(ps.size()) - 1))];
        if (p.kind == Kind::kRetention && !p.keep.forever) {
          now = OracleEnd(p.keep, p.from == From::kDate ? m.date : m.first_capture) - pick(0, 1);
        }
      }

      const Decision d = Decide(ps, matched, m, now);
      const OracleAnswer want = Oracle(ps, matched, m, now);
      ++decisions;
      ++verdicts[static_cast<int>(d.verdict)];

      std::vector<std::string> problems;
      auto check = [&](bool ok, const std::string& what) {
        if (!ok) problems.push_back(what);
      };
      check(d.verdict == want.verdict,
            std::string("verdict ") + VerdictName(d.verdict) + ", the oracle says " + VerdictName(want.verdict));
      if (want.verdict == Verdict::kKeep) {
        check(d.keep_until == want.keep_until,
              "keep_until " + std::to_string(d.keep_until) + ", the oracle says " + std::to_string(want.keep_until));
      }
      if (want.verdict == Verdict::kHeld) check(d.holds == want.holds, "holds differ");
      check(d.deciding == want.deciding, "deciding " + json(d.deciding).dump() + ", the oracle says " + json(want.deciding).dump());
      // Safety, said directly.
      check(!(want.hold_applies && d.verdict == Verdict::kPurgeable), "purgeable although a hold applies");
      check(!(want.hold_applies && d.verdict != Verdict::kHeld), "not held although a hold applies");
      check(!(want.retention_runs && (d.verdict == Verdict::kPurgeable || d.verdict == Verdict::kReview)),
            "purgeable or review while a retention that applies still runs");
      // Every policy votes, in set order.
      check(d.votes.size() == ps.size(), "votes: " + std::to_string(d.votes.size()));
      for (size_t i = 0; i < ps.size() && i < d.votes.size(); ++i) {
        const Vote& v = d.votes[i];
        const Policy& p = ps[i];
        const std::string at = "vote " + std::to_string(i) + " ";
        check(v.policy == p.name && v.kind == p.kind && v.weight == p.weight, at + "names another policy");
        if (!want.applies[i]) {
          check(v.vote == "none" && !v.counted, at + "\"" + v.vote + "\" for a policy that does not apply");
        } else if (p.kind == Kind::kHold) {
          check(v.vote == "keep", at + "\"" + v.vote + "\" for a hold");
        } else if (p.kind == Kind::kTag) {
          check(v.vote == "abstain", at + "\"" + v.vote + "\" for a tag");
        } else {
          const std::string expected = now < want.ends[i] ? "keep" : ActionName(p.action);
          check(v.vote == expected, at + "\"" + v.vote + "\", the oracle says \"" + expected + "\"");
          check(v.until == want.ends[i], at + "until " + std::to_string(v.until) + ", the oracle says " + std::to_string(want.ends[i]));
          check(v.counted == want.counted[i], at + "counted " + std::to_string(v.counted));
        }
      }
      if (!problems.empty()) {
        ++failures;
        std::string all;
        for (const std::string& p : problems) all += "  " + p + "\n";
        ADD_FAILURE() << "seed " << kSeed << ", scenario " << s << ", message " << mi << ":\n"
                      << all << Describe(ps, matched, m, now, d);
      }
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("[ policy  ] %d scenarios, %llu decisions (keep %llu, held %llu, review %llu, purgeable %llu) in %.3f s\n",
              kScenarios, static_cast<unsigned long long>(decisions), static_cast<unsigned long long>(verdicts[0]),
              static_cast<unsigned long long>(verdicts[1]), static_cast<unsigned long long>(verdicts[2]),
              static_cast<unsigned long long>(verdicts[3]), seconds);
  // Every outcome is reached often enough for the comparison to mean something.
  for (uint64_t n : verdicts) EXPECT_GT(n, decisions / 50);
}

// The oracle's calendar against the header's own examples, so that a wrong oracle cannot agree
// with a wrong End by accident.
TEST(PolicyProperty, OracleCalendarMatchesTheHeaderExamples) {
  EXPECT_EQ(OracleEnd(P("7y"), Utc(2002, 8, 28, 10)), Utc(2009, 8, 28, 10));
  EXPECT_EQ(OracleEnd(P("1y"), Utc(2004, 2, 29)), Utc(2005, 2, 28));
  EXPECT_EQ(OracleEnd(P("1mo"), Utc(2003, 1, 31)), Utc(2003, 2, 28));
  EXPECT_EQ(OracleEnd(P("1mo"), Utc(1969, 12, 31, 23)), Utc(1970, 1, 31, 23));
  EXPECT_EQ(OracleEnd(P("13mo"), Utc(1968, 1, 31, 1, 2, 3)), Utc(1969, 2, 28, 1, 2, 3));
}

// ---------------------------------------------------------------------------------------------
// The store: versions, the audit trail, the preservation lock

SecretKey Key(char c) { return SecretKey(std::string(kKeySize, c)); }

class PolicyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<control::StateStore>> s = control::StateStore::Open(tmp_.path(), Key('s'));
    ASSERT_TRUE(s.ok()) << s.error().ToString();
    state_ = std::move(*s);
    Result<std::unique_ptr<control::AuditLog>> a = control::AuditLog::Open(state_.get(), Key('a'));
    ASSERT_TRUE(a.ok()) << a.error().ToString();
    audit_ = std::move(*a);
    store_ = std::make_unique<PolicyStore>(state_.get(), audit_.get());
  }

  static std::vector<Policy> Parse(const std::string& text) {
    Result<std::vector<Policy>> r = ParsePolicySet(text);
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    return r.ok() ? *r : std::vector<Policy>{};
  }
  PolicySet Now() {
    Result<PolicySet> s = store_->Current();
    EXPECT_TRUE(s.ok()) << s.error().ToString();
    return s.ok() ? *s : PolicySet{};
  }
  std::vector<control::AuditEntry> Audit(const std::string& action) {
    control::AuditLog::Filter f;
    f.action = action;
    f.limit = 1000;
    Result<std::vector<control::AuditEntry>> r = audit_->Read(f);
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    return r.ok() ? *r : std::vector<control::AuditEntry>{};
  }
  static std::string Names(const PolicySet& s) {
    std::string out;
    for (const Policy& p : s.policies) out += (out.empty() ? "" : ",") + p.name;
    return out;
  }

  // A set: a retention per custodian, a catch-all, a hold and a tag.
  static constexpr const char* kBase = R"([
    {"name": "finance", "kind": "retention", "custodians": ["cfo@corp.example"], "keep": "7y", "weight": 2},
    {"name": "default", "kind": "retention", "keep": "1y", "action": "review"},
    {"name": "case-1", "kind": "hold", "case": "1", "custodians": ["ceo@corp.example"]},
    {"name": "spam", "kind": "tag", "query": "subject:viagra"}
  ])";

  control::Actor ada_{"ada", "admin", "session", "127.0.0.1"};
  TempDir tmp_;
  std::unique_ptr<control::StateStore> state_;
  std::unique_ptr<control::AuditLog> audit_;
  std::unique_ptr<PolicyStore> store_;
};

TEST_F(PolicyStoreTest, NothingSavedIsVersionZeroAndEmpty) {
  PolicySet s = Now();
  EXPECT_EQ(s.version, 0u);
  EXPECT_TRUE(s.policies.empty());
  Result<std::vector<PolicySet>> h = store_->History();
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->empty());
  Result<LockState> l = store_->Lock();
  ASSERT_TRUE(l.ok());
  EXPECT_FALSE(l->locked);
}

TEST_F(PolicyStoreTest, ReplaceKeepsVersionsAndEffectiveTimes) {
  const int64_t t1 = Utc(2024, 1, 1), t2 = Utc(2024, 2, 1);
  Result<PolicySet> first = store_->Replace(Parse(kBase), ada_, t1);
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  EXPECT_EQ(first->version, 1u);
  EXPECT_EQ(first->saved, t1);
  EXPECT_EQ(first->saved_by, "ada");
  for (const Policy& p : first->policies) EXPECT_EQ(p.effective, t1) << p.name;

  // The second set: "default" changed (2y), "spam" removed, "news" added, the rest unchanged.
  std::vector<Policy> next = Parse(R"([
    {"name": "finance", "kind": "retention", "custodians": ["cfo@corp.example"], "keep": "7y", "weight": 2},
    {"name": "default", "kind": "retention", "keep": "2y", "action": "review"},
    {"name": "case-1", "kind": "hold", "case": "1", "custodians": ["ceo@corp.example"]},
    {"name": "news", "kind": "tag", "query": "from:news@example.com"}
  ])");
  next[0].effective = 42;  // what the caller says about `effective` does not count
  SetDiff diff;
  Result<PolicySet> second = store_->Replace(next, control::Actor{"bob", "admin", "session", "10.0.0.1"}, t2, &diff);
  ASSERT_TRUE(second.ok()) << second.error().ToString();
  EXPECT_EQ(second->version, 2u);
  EXPECT_EQ(diff.added, std::vector<std::string>{"news"});
  EXPECT_EQ(diff.removed, std::vector<std::string>{"spam"});
  EXPECT_EQ(diff.changed, std::vector<std::string>{"default"});

  const PolicySet now = Now();
  EXPECT_EQ(now.version, 2u);
  EXPECT_EQ(now.saved, t2);
  EXPECT_EQ(now.saved_by, "bob");
  EXPECT_EQ(Names(now), "finance,default,case-1,news");
  EXPECT_EQ(now.Find("finance")->effective, t1);  // unchanged: as in force since t1
  EXPECT_EQ(now.Find("case-1")->effective, t1);
  EXPECT_EQ(now.Find("default")->effective, t2);  // changed: a new policy
  EXPECT_EQ(now.Find("news")->effective, t2);
  EXPECT_EQ(now.Find("default")->keep, P("2y"));
  EXPECT_EQ(now.Find("spam"), nullptr);

  Result<std::vector<PolicySet>> h = store_->History();
  ASSERT_TRUE(h.ok()) << h.error().ToString();
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0].version, 2u);  // newest first
  EXPECT_EQ((*h)[1].version, 1u);
  EXPECT_EQ(Names((*h)[1]), "finance,default,case-1,spam");
  EXPECT_EQ((*h)[1].Find("default")->keep, P("1y"));
  EXPECT_EQ((*h)[0].ToJson(), now.ToJson());
  Result<std::vector<PolicySet>> one = store_->History(1);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].version, 2u);

  // Each Replace is on the audit trail, with its version and what it changed.
  const std::vector<control::AuditEntry> entries = Audit("policy.set");
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].event.user, "ada");
  EXPECT_EQ(entries[0].event.details.at("version"), 1);
  EXPECT_EQ(entries[0].event.details.at("diff")["added"], json::array({"finance", "default", "case-1", "spam"}));
  EXPECT_EQ(entries[0].event.details.at("diff")["removed"], json::array());
  EXPECT_EQ(entries[1].event.user, "bob");
  EXPECT_EQ(entries[1].event.details.at("version"), 2);
  EXPECT_EQ(entries[1].event.details.at("diff")["added"], json::array({"news"}));
  EXPECT_EQ(entries[1].event.details.at("diff")["removed"], json::array({"spam"}));
  EXPECT_EQ(entries[1].event.details.at("diff")["changed"], json::array({"default"}));

  // The same set again: a version with nothing changed, every effective time kept.
  Result<PolicySet> third = store_->Replace(Now().policies, ada_, Utc(2024, 3, 1));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->version, 3u);
  EXPECT_EQ(third->Find("default")->effective, t2);
  EXPECT_EQ(third->Find("finance")->effective, t1);
  EXPECT_EQ(Audit("policy.set").back().event.details.at("diff"), json::parse(R"({"added": [], "removed": [], "changed": []})"));
}

TEST_F(PolicyStoreTest, HoldsArePlacedAndReleased) {
  ASSERT_TRUE(store_->Replace(Parse(kBase), ada_, Utc(2024, 1, 1)).ok());
  Policy hold = Parse(R"([{"name": "case-2", "kind": "hold", "case": "2", "query": "from:x@y.example"}])")[0];
  Result<PolicySet> placed = store_->Add(hold, ada_, Utc(2024, 1, 2), "hold.place");
  ASSERT_TRUE(placed.ok()) << placed.error().ToString();
  EXPECT_EQ(placed->version, 2u);
  ASSERT_NE(Now().Find("case-2"), nullptr);
  EXPECT_EQ(Now().Find("case-2")->effective, Utc(2024, 1, 2));
  // Twice is refused.
  Result<PolicySet> again = store_->Add(hold, ada_, Utc(2024, 1, 3), "hold.place");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kConflict);
  std::vector<control::AuditEntry> placed_audit = Audit("hold.place");
  ASSERT_EQ(placed_audit.size(), 1u);
  EXPECT_EQ(placed_audit[0].event.details.at("policy"), "case-2");
  EXPECT_EQ(placed_audit[0].event.details.at("diff")["added"], json::array({"case-2"}));

  // Released: by name and kind.
  Result<PolicySet> wrong_kind = store_->Remove("case-2", Kind::kRetention, ada_, Utc(2024, 1, 4), "hold.release");
  ASSERT_FALSE(wrong_kind.ok());
  EXPECT_EQ(wrong_kind.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->Remove("case-9", Kind::kHold, ada_, Utc(2024, 1, 4), "hold.release").error().code(), ErrorCode::kNotFound);
  Result<PolicySet> released = store_->Remove("case-2", Kind::kHold, ada_, Utc(2024, 1, 4), "hold.release");
  ASSERT_TRUE(released.ok()) << released.error().ToString();
  EXPECT_EQ(released->version, 3u);
  EXPECT_EQ(Now().Find("case-2"), nullptr);
  EXPECT_EQ(Names(Now()), "finance,default,case-1,spam");
  std::vector<control::AuditEntry> released_audit = Audit("hold.release");
  ASSERT_EQ(released_audit.size(), 1u);
  EXPECT_EQ(released_audit[0].event.details.at("diff")["removed"], json::array({"case-2"}));
}

TEST_F(PolicyStoreTest, PreservationLockOnlyLetsRetentionsGrowAndHoldsStay) {
  ASSERT_TRUE(store_->Replace(Parse(kBase), ada_, Utc(2024, 1, 1)).ok());
  Result<LockState> lock = store_->SetLock(ada_, Utc(2024, 1, 2));
  ASSERT_TRUE(lock.ok()) << lock.error().ToString();
  EXPECT_TRUE(lock->locked);
  EXPECT_EQ(lock->since, Utc(2024, 1, 2));
  EXPECT_EQ(lock->by, "ada");
  ASSERT_EQ(Audit("policy.lock").size(), 1u);

  int64_t t = Utc(2024, 2, 1);
  // `edit` changes the set in force (as JSON) and tries it; the outcome is checked after.
  auto attempt = [&](const std::function<void(json&)>& edit) {
    json j = json::array();
    for (const Policy& p : Now().policies) j.push_back(p.ToJson());
    edit(j);
    Result<std::vector<Policy>> next = ParsePolicyArray(j);
    EXPECT_TRUE(next.ok()) << next.error().ToString();
    return store_->Replace(next.ok() ? *next : std::vector<Policy>{}, ada_, t += 60);
  };
  auto find = [](json& j, const std::string& name) -> json& {
    for (json& p : j) {
      if (p["name"] == name) return p;
    }
    ADD_FAILURE() << name;
    return j;
  };
  auto refused = [&](const std::function<void(json&)>& edit, const std::string& what) {
    const PolicySet before = Now();
    const size_t audited = Audit("policy.set").size();
    Result<PolicySet> r = attempt(edit);
    ASSERT_FALSE(r.ok()) << what << " was accepted under the lock";
    EXPECT_EQ(r.error().code(), ErrorCode::kConflict) << what;
    EXPECT_TRUE(Contains(r.error().message(), "preservation lock")) << what << ": " << r.error().message();
    // The set in force is as it was.
    const PolicySet after = Now();
    EXPECT_EQ(after.version, before.version) << what;
    EXPECT_EQ(after.ToJson(), before.ToJson()) << what;
    EXPECT_EQ(Audit("policy.set").size(), audited) << what;
  };
  auto accepted = [&](const std::function<void(json&)>& edit, const std::string& what) {
    const uint64_t version = Now().version;
    Result<PolicySet> r = attempt(edit);
    ASSERT_TRUE(r.ok()) << what << ": " << r.error().ToString();
    EXPECT_EQ(r->version, version + 1) << what;
    EXPECT_EQ(Now().version, version + 1) << what;
  };

  refused([&](json& j) { j.erase(1); }, "removing the catch-all retention");
  refused([&](json& j) { find(j, "finance")["keep"] = "6y"; }, "shortening 7y to 6y");
  refused([&](json& j) { find(j, "finance")["keep"] = "2555d"; }, "7y as 2555 days (short by the leap days)");
  refused([&](json& j) { find(j, "finance")["weight"] = 3; }, "a retention's weight");
  refused([&](json& j) { find(j, "default")["action"] = "delete"; }, "review turned into delete");
  refused([&](json& j) { find(j, "finance")["custodians"] = json::array({"cfo2@corp.example"}); }, "another custodian instead");
  refused([&](json& j) { find(j, "default")["custodians"] = json::array({"cfo@corp.example"}); }, "a catch-all narrowed to a custodian");
  refused([&](json& j) { find(j, "finance")["retroactive"] = false; }, "no longer retroactive");
  refused([&](json& j) { find(j, "finance")["from"] = "capture"; }, "another start");
  refused([&](json& j) { find(j, "default")["query"] = "subject:x"; }, "a query added to a catch-all");
  refused([&](json& j) { j.erase(2); }, "removing the hold");
  refused([&](json& j) { find(j, "case-1")["custodians"].push_back("cto@corp.example"); }, "changing a hold (wider)");
  refused([&](json& j) { find(j, "case-1")["case"] = "2"; }, "changing a hold's case");
  {
    const PolicySet before = Now();
    Result<PolicySet> r = store_->Remove("case-1", Kind::kHold, ada_, t += 60, "hold.release");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kConflict);
    EXPECT_EQ(Now().ToJson(), before.ToJson());
    EXPECT_TRUE(Audit("hold.release").empty());
  }

  accepted([&](json& j) { find(j, "finance")["keep"] = "8y"; }, "extending 7y to 8y");
  EXPECT_EQ(Now().Find("finance")->keep, P("8y"));
  accepted([&](json& j) { find(j, "finance")["keep"] = "96mo"; }, "8y as 96 months (the same end)");
  accepted([&](json& j) { find(j, "default")["keep"] = "forever"; }, "a catch-all kept forever");
  accepted([&](json& j) { find(j, "finance")["action"] = "review"; }, "delete turned into review");
  accepted([&](json& j) { find(j, "finance")["custodians"].push_back("cfo2@corp.example"); }, "a custodian more");
  accepted([&](json& j) { find(j, "finance").erase("custodians"); }, "every custodian");
  accepted([&](json& j) { find(j, "spam")["query"] = "subject:(viagra OR mortgage)"; }, "changing a tag");
  accepted([&](json& j) { j.push_back(json{{"name", "case-2"}, {"kind", "hold"}, {"query", "*"}}); }, "adding a hold");
  // finance now reviews: an added explicit retention that deletes could outvote it once both
  // have run out, so it must review too.
  refused([&](json& j) { j.push_back(json{{"name", "legal-1y"}, {"kind", "retention"}, {"keep", "1y"}, {"query", "x"}}); },
          "adding a retention that deletes while a locked one reviews");
  accepted([&](json& j) {
    j.push_back(json{{"name", "legal-1y"}, {"kind", "retention"}, {"keep", "1y"}, {"query", "x"}, {"action", "review"}});
  }, "adding a retention that reviews");
  accepted([&](json& j) { find(j, "spam")["tag"] = "junk"; }, "a tag's name");
  refused([&](json& j) { j.erase(j.size() - 1); }, "removing the retention just added");
  accepted([&](json& j) {
    for (size_t i = 0; i < j.size(); ++i) {
      if (j[i]["name"] == "spam") j.erase(i);
    }
  }, "removing a tag");
  EXPECT_EQ(Names(Now()), "finance,default,case-1,case-2,legal-1y");

  // A hold placed by Add under the lock.
  Policy hold = Parse(R"([{"name": "case-3", "kind": "hold", "custodians": ["x@corp.example"]}])")[0];
  ASSERT_TRUE(store_->Add(hold, ada_, t += 60, "hold.place").ok());

  // Locking again changes nothing: the first lock stays, and nothing is audited.
  Result<LockState> second = store_->SetLock(control::Actor{"bob", "admin", "session", "10.0.0.1"}, Utc(2025, 1, 1));
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->locked);
  EXPECT_EQ(second->since, Utc(2024, 1, 2));
  EXPECT_EQ(second->by, "ada");
  Result<LockState> now = store_->Lock();
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(now->locked);
  EXPECT_EQ(now->since, Utc(2024, 1, 2));
  EXPECT_EQ(Audit("policy.lock").size(), 1u);
  refused([&](json& j) { j.erase(0); }, "removing a retention after a second lock");
}

// BUG: policy/store.cc:194-202 (PolicyStore::Add) appends to the set in force and Save writes
// it without the limits of a set, while PolicySet::FromJson re-reads every stored set with
// ParsePolicyArray, which refuses more than kMaxPolicies. With kMaxPolicies policies in force,
// placing one more hold (the API and `policy hold` check the hold alone, with ParsePolicy) is
// accepted and written, and from then on Current() answers kCorruption ("the stored policy set
// version 2 does not parse: a policy set has at most 1000 policies"): every later Replace, Add
// and Remove fails at Current(), and under the preservation lock nothing can repair it.
// Minimal input: Replace with 1000 tag policies, then Add one hold.
TEST_F(PolicyStoreTest, AddBeyondMaxPoliciesKeepsTheSetReadable) {
  std::vector<Policy> full;
  for (size_t i = 0; i < kMaxPolicies; ++i) full.push_back(Tag("t" + std::to_string(i), ""));
  ASSERT_TRUE(store_->Replace(full, ada_, Utc(2024, 1, 1)).ok());
  ASSERT_TRUE(store_->Current().ok());
  Result<PolicySet> added = store_->Add(Hold("case-x", {"x@corp.example"}, "x"), ada_, Utc(2024, 1, 2), "hold.place");
  Result<PolicySet> now = store_->Current();
  ASSERT_TRUE(now.ok()) << "Add " << (added.ok() ? "accepted" : "refused") << " a policy beyond kMaxPolicies, and the set in force "
                        << "no longer reads: " << now.error().ToString();
  EXPECT_EQ(now->policies.size(), kMaxPolicies + (added.ok() ? 1 : 0));
  EXPECT_TRUE(store_->Remove("t0", Kind::kTag, ada_, Utc(2024, 1, 3), "policy.remove").ok());
}

TEST(PolicyLock, DiffNamesAddedRemovedChanged) {
  std::vector<Policy> before = {Retention("a", "1y"), Retention("b", "1y"), Tag("c", "q")};
  std::vector<Policy> after = {Retention("a", "1y"), Retention("b", "2y"), Tag("d", "q")};
  after[0].effective = 99;  // not part of the definition
  SetDiff d = Diff(before, after);
  EXPECT_EQ(d.added, std::vector<std::string>{"d"});
  EXPECT_EQ(d.removed, std::vector<std::string>{"c"});
  EXPECT_EQ(d.changed, std::vector<std::string>{"b"});
  EXPECT_EQ(d.ToJson(), json::parse(R"({"added": ["d"], "removed": ["c"], "changed": ["b"]})"));
}

TEST(PolicyLock, PeriodsCompareForEveryStart) {
  auto ok = [](const std::string& from, const std::string& to) {
    return CheckPreserved({Retention("r", from)}, {Retention("r", to)}).ok();
  };
  EXPECT_TRUE(ok("1y", "12mo"));
  EXPECT_TRUE(ok("12mo", "1y"));
  EXPECT_TRUE(ok("1y", "366d"));
  EXPECT_FALSE(ok("1y", "365d"));   // short on a leap year
  EXPECT_FALSE(ok("1y", "52w"));
  EXPECT_TRUE(ok("1mo", "31d"));
  EXPECT_FALSE(ok("1mo", "30d"));
  EXPECT_FALSE(ok("30d", "1mo"));   // February
  EXPECT_TRUE(ok("28d", "1mo"));
  EXPECT_TRUE(ok("4w", "28d"));
  EXPECT_FALSE(ok("29d", "4w"));
  EXPECT_TRUE(ok("7y", "forever"));
  EXPECT_FALSE(ok("forever", "200y"));
}

// Regression: the first AtLeast compared two periods only for starts in 2000-2003 (the leap-year
// cycle), but the Gregorian cycle is 400 years: 2100 (and 1900) is not a leap year. "4y" from
// 2097-03-01 runs out on 2101-03-01, 1460 days later, while "1461d" runs until 2101-03-02, so
// under the lock "1461d" could be replaced by "4y" (and "2922d" by "8y"): a day shorter for mail
// dated 1897-03..1900-02 or 2097-03..2100-02.
TEST(PolicyLock, PeriodsCompareAcrossCenturyYears) {
  EXPECT_LT(P("4y").End(Utc(2097, 3, 1)), P("1461d").End(Utc(2097, 3, 1)));  // the premise
  EXPECT_LT(P("4y").End(Utc(1897, 3, 1)), P("1461d").End(Utc(1897, 3, 1)));
  EXPECT_FALSE(CheckPreserved({Retention("r", "1461d")}, {Retention("r", "4y")}).ok()) << "4y is shorter than 1461d from 2097-03-01";
  EXPECT_FALSE(CheckPreserved({Retention("r", "2922d")}, {Retention("r", "8y")}).ok()) << "8y is shorter than 2922d from 2093-03-01";
}

}  // namespace
}  // namespace mailvault::policy
