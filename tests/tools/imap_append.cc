// Test tool for recovery/imap_client.h against a real server (tests/recovery/imap_client_test.sh):
//   imap_append HOST PORT LOGIN PASSWORD AS_USER MAILBOX FILE...
// (AS_USER "-" for none) appends each file (pipelined), prints "appended FILE uid N" or
// "refused FILE CODE TEXT" per file, then "holds N" (UID FETCH of the mailbox) and checks that
// the first appended message reads back byte for byte (as CRLF). Exit 1 on any error.
#include <fstream>
#include <iostream>
#include <sstream>

#include "recovery/imap_client.h"

using namespace mailvault::recovery;

int main(int argc, char** argv) {
  if (argc < 8) {
    std::cerr << "usage: imap_append HOST PORT LOGIN PASSWORD AS_USER|- MAILBOX FILE...\n";
    return 2;
  }
  ImapEndpoint e;
  e.host = argv[1];
  e.port = static_cast<uint16_t>(std::stoi(argv[2]));
  e.tls = ImapEndpoint::Tls::kNone;
  e.timeout = std::chrono::seconds(20);
  ImapCredentials cred{argv[3], argv[4], std::string(argv[5]) == "-" ? "" : argv[5]};
  const std::string mailbox = argv[6];
  auto fail = [](const mailvault::Error& err) {
    std::cerr << "imap_append: " << err.ToString() << "\n";
    return 1;
  };
  auto client = ImapClient::Connect(e);
  if (!client.ok()) return fail(client.error());
  if (auto s = (*client)->Login(cred); !s.ok()) return fail(s.error());
  if (auto s = (*client)->Create(mailbox); !s.ok()) return fail(s.error());
  std::vector<ImapAppend> items;
  std::vector<std::string> files;
  for (int i = 7; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    items.push_back(ImapAppend{ss.str(), {"\\Seen"}, 1030000000});
    files.push_back(argv[i]);
  }
  auto results = (*client)->Append(mailbox, items, 16);
  if (!results.ok()) return fail(results.error());
  uint32_t first_uid = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const ImapAppendResult& r = (*results)[i];
    if (r.ok) {
      std::cout << "appended " << files[i] << " uid " << r.uid << "\n";
      if (!first_uid) first_uid = r.uid;
    } else {
      std::cout << "refused " << files[i] << " " << (r.code.empty() ? "-" : r.code) << " " << r.text << "\n";
    }
  }
  auto box = (*client)->Select(mailbox, true);
  if (!box.ok()) return fail(box.error());
  auto held = (*client)->FetchHeaders();
  if (!held.ok()) return fail(held.error());
  std::cout << "holds " << held->size() << " exists " << box->exists << "\n";
  if (first_uid) {
    auto back = (*client)->FetchMessage(first_uid);
    if (!back.ok()) return fail(back.error());
    size_t k = 0;
    while (!(*results)[k].ok) ++k;
    if (*back != ToCrlf(items[k].message)) {
      std::cerr << "imap_append: message uid " << first_uid << " reads back different (" << back->size() << " bytes)\n";
      return 1;
    }
    std::cout << "read back uid " << first_uid << " byte for byte\n";
  }
  if (auto s = (*client)->Logout(); !s.ok()) return fail(s.error());
  return 0;
}
