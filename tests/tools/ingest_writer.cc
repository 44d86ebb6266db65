// Test helper for the kill loop: opens a vault and ingests corpus files from several threads,
// printing "ACK <id>" on stdout (flushed) for each message the vault acknowledged. The test
// kills this process with SIGKILL at a random moment and then checks every ACK survived.
//
//   ingest_writer VAULT KEYFILE FILELIST START THREADS
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "core/message.h"
#include "vault/vault.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: ingest_writer VAULT KEYFILE FILELIST START THREADS\n");
    return 2;
  }
  mailvault::InitMessageParsing();
  mailvault::KeySource keys;
  keys.key_file = argv[2];
  mailvault::VaultOptions options;
  options.seal_bytes = 1 << 20;  // many seals during the loop
  auto v = mailvault::Vault::Open(argv[1], keys, options);
  if (!v.ok()) {
    std::fprintf(stderr, "open: %s\n", v.error().ToString().c_str());
    return 1;
  }
  std::vector<std::string> files;
  std::ifstream list(argv[3]);
  for (std::string line; std::getline(list, line);) files.push_back(line);
  size_t start = std::stoul(argv[4]);
  int threads = std::stoi(argv[5]);
  std::mutex out_mu;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (size_t i = start + t; i < files.size(); i += threads) {
        std::ifstream in(files[i], std::ios::binary);
        std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        mailvault::Envelope env;
        env.source = "kill-loop";
        env.recipients = {"r" + std::to_string(i) + "@x"};
        auto r = (*v)->Ingest(raw, env);
        if (!r.ok()) continue;
        std::lock_guard<std::mutex> l(out_mu);
        std::printf("ACK %s\n", r->id.Hex().c_str());
        std::fflush(stdout);
      }
    });
  }
  for (auto& t : ts) t.join();
  std::printf("DONE\n");
  return 0;
}
