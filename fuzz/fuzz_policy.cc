// libFuzzer target: a policy set (policy/policy.h), which compliance staff upload (PUT
// /api/v1/policies, `mailvault policy set FILE`). Every input must give a set or an error; a set
// that parses must come back the same through its JSON, and arbitration must hold its fixed
// rules for it (a hold that applies keeps; a running retention keeps) on a message made from
// the input's last bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "policy/engine.h"
#include "policy/evaluate.h"
#include "policy/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailvault::policy;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  mailvault::Result<std::vector<Policy>> set = ParsePolicySet(in, QueryLanguageCheck());
  if (!set.ok()) {
    if (set.error().message().empty()) std::abort();  // every refusal says why
    return 0;
  }
  if (set->size() > kMaxPolicies) std::abort();
  nlohmann::json again = nlohmann::json::array();
  for (const Policy& p : *set) again.push_back(p.ToJson());
  mailvault::Result<std::vector<Policy>> round = ParsePolicyArray(again, QueryLanguageCheck());
  if (!round.ok() || round->size() != set->size()) std::abort();
  for (size_t i = 0; i < set->size(); ++i) {
    if (!(*round)[i].SameDefinition((*set)[i])) std::abort();
  }
  // One message and a moment from the input's bytes; every query "matches".
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : in) h = (h ^ c) * 1099511628211ull;
  MessageFacts m;
  m.id = "00";
  m.date = static_cast<int64_t>(h % 2000000000);
  m.first_capture = m.date + static_cast<int64_t>((h >> 32) % 100000);
  m.custodians = {"a@b.example"};
  for (const Policy& p : *set) {
    if (!p.custodians.empty()) m.custodians.push_back(p.custodians.front());
  }
  const int64_t now = m.first_capture + static_cast<int64_t>((h >> 16) % 400000000);
  Decision d = Decide(*set, std::vector<bool>(set->size(), true), m, now);
  bool held = false, running = false;
  for (const Policy& p : *set) {
    if (!Applies(p, true, m)) continue;
    held |= p.kind == Kind::kHold;
    running |= p.kind == Kind::kRetention && now < p.keep.End(p.from == From::kDate ? m.date : m.first_capture);
  }
  if (held && d.verdict != Verdict::kHeld) std::abort();
  if (!held && running && d.verdict != Verdict::kKeep) std::abort();
  (void)d.ToJson();
  return 0;
}
