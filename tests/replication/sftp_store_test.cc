// The SFTP target against a real OpenSSH sshd on 127.0.0.1 (its own host key, key-only login,
// /usr/lib/openssh/sftp-server): round trips, names, listing, overwrite, refused host and client
// keys, a server killed in the middle of an upload and restarted, a stalled server, the
// bandwidth limit, and a full disk on the server (a 1 MiB tmpfs). Needs root (sshd's privilege
// separation, mount); CI runs as root.
#include "replication/sftp_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "tests/test_util.h"

extern char** environ;

namespace mailvault::replication {
namespace {

using mailvault::testing::ReadFile;
using mailvault::testing::TempDir;
using mailvault::testing::WriteFile;
namespace fs = std::filesystem;

void Sh(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Deterministic bytes that differ from chunk to chunk (a repeated pattern could hide an offset
// bug).
std::string PseudoRandom(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool Accepts(int family, int port) {
  int fd = ::socket(family, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int rc;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  ::close(fd);
  return rc == 0;
}

// Whether pid is a process that has not exited (a zombie has).
bool Alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

// Every process whose parent chain leads to root (not root itself), from /proc.
std::vector<pid_t> Descendants(pid_t root) {
  std::map<pid_t, pid_t> parent;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string n = e.path().filename();
    if (n.empty() || !std::all_of(n.begin(), n.end(), ::isdigit)) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    pid_t ppid;
    if (rest >> state >> ppid) parent[std::stoi(n)] = ppid;
  }
  std::vector<pid_t> out;
  std::set<pid_t> inside{root};
  bool grew = true;
  while (grew) {
    grew = false;
    for (auto [pid, ppid] : parent) {
      if (inside.count(ppid) && !inside.count(pid)) {
        inside.insert(pid);
        out.push_back(pid);
        grew = true;
      }
    }
  }
  return out;
}

// A private sshd: its own host key, a client key in its authorized_keys, key-only login.
class SshServer {
 public:
  // Generates the keys; StartOnFreePort() picks the port.
  explicit SshServer(const std::string& dir) : dir_(dir) {
    for (const char* key : {"host_key", "client_key", "stranger_key", "other_host_key"}) {
      Sh("ssh-keygen -q -t ed25519 -N '' -C mailvault-test -f " + dir_ + "/" + key);
    }
    Sh("ssh-keygen -q -t ecdsa -N '' -C mailvault-test -f " + dir_ + "/ecdsa_host_key");
    fs::copy_file(dir_ + "/client_key.pub", dir_ + "/authorized_keys");
    fs::create_directories(dir_ + "/root");
  }
  ~SshServer() { Kill(); }

  // Another process (a test running in parallel) may take the free port before sshd binds it:
  // then a new port.
  void StartOnFreePort() {
    std::string why;
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = FreePort();
      WriteConfig();
      if (Spawn(&why)) return;
    }
    FAIL() << why;
  }

  // Starts sshd again on the same port (after Kill).
  void Restart() {
    std::string why;
    ASSERT_TRUE(Spawn(&why)) << why;
  }

  // kill -9 of sshd and everything below it (the connections' processes, sftp-server).
  void Kill() {
    if (pid_ < 0) return;
    std::vector<pid_t> below = Descendants(pid_);
    ::kill(pid_, SIGKILL);
    for (pid_t p : below) ::kill(p, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    // kill() returns before the processes are gone; wait, so that their sockets are closed
    // when this returns (a zombie has closed them).
    for (pid_t p : below) {
      for (int i = 0; i < 500 && Alive(p); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // Signals the connections' processes, not the listener.
  void SignalSessions(int sig) {
    for (pid_t p : Descendants(pid_)) ::kill(p, sig);
  }

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  std::string root() const { return dir_ + "/root"; }
  std::string Key(const std::string& name) const { return dir_ + "/" + name; }
  // A known_hosts line for host:port with the public half of key.
  std::string PinLine(const std::string& host, const std::string& key) const {
    return "[" + host + "]:" + std::to_string(port_) + " " + Trim(ReadFile(Key(key) + ".pub")) + "\n";
  }

 private:
  void WriteConfig() const {
    const std::vector<std::string> lines = {
        "Port " + std::to_string(port_),
        "ListenAddress 127.0.0.1",
        "ListenAddress ::1",
        "HostKey " + dir_ + "/host_key",
        "PidFile none",
        "AuthorizedKeysFile " + dir_ + "/authorized_keys",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "LogLevel VERBOSE",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    };
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    WriteFile(dir_ + "/sshd_config", text);
  }

  // Runs sshd and waits until it says it listens on 127.0.0.1 (a connect could reach another
  // process that holds the port).
  bool Spawn(std::string* why) {
    ::mkdir("/run/sshd", 0755);  // privilege separation needs it, and a container may lack it
    const std::string config = dir_ + "/sshd_config", log = dir_ + "/sshd.log";
    const std::string listening = "Server listening on 127.0.0.1 port " + std::to_string(port_) + ".";
    std::error_code ec;
    fs::remove(log, ec);
    std::vector<std::string> args = {"/usr/sbin/sshd", "-D", "-f", config, "-E", log};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      *why = std::string("cannot run /usr/sbin/sshd: ") + strerror(errno);
      pid_ = -1;
      return false;
    }
    for (int i = 0; i < 1000; ++i) {
      if (fs::exists(log) && ReadFile(log).find(listening) != std::string::npos) return true;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        *why = "sshd exited at start: " + ReadFile(log);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    *why = "sshd does not listen on port " + std::to_string(port_) + " after 10 s: " + ReadFile(log);
    Kill();
    return false;
  }

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

class SftpStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    tmp_ = new TempDir();
    server_ = new SshServer(tmp_->path());
    server_->StartOnFreePort();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete tmp_;
    tmp_ = nullptr;
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "sshd's privilege separation needs root (CI runs as root)";
    ASSERT_NE(server_, nullptr);
    remote_ = server_->root() + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    WriteFile(server_->Key("known_hosts"), server_->PinLine("127.0.0.1", "host_key"));
  }

  SftpConfig Config() const {
    SftpConfig c;
    c.user = "root";
    c.host = "127.0.0.1";
    c.port = server_->port();
    c.path = remote_;
    c.identity_file = server_->Key("client_key");
    c.known_hosts = server_->Key("known_hosts");
    c.transfer.connect_timeout_seconds = 10;
    c.transfer.stall_timeout_seconds = 10;
    return c;
  }
  std::unique_ptr<ObjectStore> Store() const { return MakeSftpStore(Config()); }
  std::unique_ptr<ObjectStore> PreparedStore() const {
    auto s = Store();
    Status p = s->Prepare(true);
    EXPECT_TRUE(p.ok()) << p.error().ToString();
    return s;
  }
  // Every file under the remote directory, as the server's disk has it.
  std::vector<std::string> FilesOnServer() const {
    std::vector<std::string> out;
    if (!fs::exists(remote_)) return out;
    for (const auto& e : fs::recursive_directory_iterator(remote_)) {
      if (e.is_regular_file()) out.push_back(fs::relative(e.path(), remote_).string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  static TempDir* tmp_;
  static SshServer* server_;
  std::string remote_;
};
TempDir* SftpStoreTest::tmp_ = nullptr;
SshServer* SftpStoreTest::server_ = nullptr;

TEST(SftpUrlTest, ParsesUserHostPortAndAbsolutePath) {
  auto c = ParseSftpUrl("sftp://backup@vault.example.com:2222/srv/mailvault/");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->user, "backup");
  EXPECT_EQ(c->host, "vault.example.com");
  EXPECT_EQ(c->port, 2222);
  EXPECT_EQ(c->path, "/srv/mailvault");

  c = ParseSftpUrl("sftp://backup@10.1.2.3/vault");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->host, "10.1.2.3");
  EXPECT_EQ(c->port, 22);
  EXPECT_EQ(c->path, "/vault");

  c = ParseSftpUrl("SFTP://b@[::1]:22022/");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 22022);
  EXPECT_EQ(c->path, "/");

  c = ParseSftpUrl("sftp://b@[fd00::2]/x");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->host, "fd00::2");
}

TEST(SftpUrlTest, ErrorsNameWhatIsWrong) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"s3://bucket/x", "not an sftp:// URL"},
      {"sftp://host/srv", "no user"},
      {"sftp://@host/srv", "user before '@' is empty"},
      {"sftp://u:secret@host/srv", "password"},
      {"sftp://u@host", "no directory"},
      {"sftp://u@/srv", "no host"},
      {"sftp://u@host:0/srv", "port \"0\""},
      {"sftp://u@host:70000/srv", "port \"70000\""},
      {"sftp://u@host:ssh/srv", "port \"ssh\""},
      {"sftp://u@::1/srv", "needs brackets"},
      {"sftp://u@[::1/srv", "no ']'"},
      {"sftp://u@[host]/srv", "not an IPv6 address"},
      {"sftp://u@ho_st/srv", "not a host name"},
      {"sftp://u;rm@host/srv", "the user contains ';'"},
      {"sftp://u@host/srv/../etc", "'..'"},
      {"sftp://u@host/srv//x", "empty component"},
      {"sftp://u@host/srv?x=1", "query"},
      {"sftp://u@host/my%20dir", "percent-encoding"},
      {"sftp://u@host/my dir", "space"},
  };
  for (const auto& [url, expected] : cases) {
    auto c = ParseSftpUrl(url);
    ASSERT_FALSE(c.ok()) << url;
    EXPECT_EQ(c.error().code(), ErrorCode::kInvalidArgument) << url;
    EXPECT_NE(c.error().message().find(expected), std::string::npos) << url << ": " << c.error().message();
    EXPECT_NE(c.error().message().find("sftp://USER@HOST[:PORT]/PATH"), std::string::npos) << c.error().message();
  }
}

TEST_F(SftpStoreTest, DescribeShowsTheUrl) {
  EXPECT_EQ(Store()->Describe(), "sftp://root@127.0.0.1:" + std::to_string(server_->port()) + remote_);
  SftpConfig c = Config();
  c.host = "::1";
  EXPECT_EQ(MakeSftpStore(c)->Describe(), "sftp://root@[::1]:" + std::to_string(server_->port()) + remote_);
}

TEST_F(SftpStoreTest, PrepareCreatesTheDirectoryOnlyWhenAsked) {
  auto store = Store();
  Status s = store->Prepare(false);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound) << s.error().ToString();
  // A put does not create the target's own directory either (an unmounted disk, a wrong URL).
  s = store->PutBytes("a", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound) << s.error().ToString();
  EXPECT_NE(s.error().message().find("prepare"), std::string::npos) << s.error().ToString();
  EXPECT_FALSE(fs::exists(remote_));

  s = store->Prepare(true);
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_TRUE(fs::is_directory(remote_));
  EXPECT_EQ(fs::status(remote_).permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_TRUE(store->Prepare(false).ok());
  EXPECT_TRUE(store->Prepare(true).ok());

  WriteFile(remote_ + "/file", "x");
  SftpConfig c = Config();
  c.path = remote_ + "/file";
  s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument) << s.error().ToString();
}

TEST_F(SftpStoreTest, BytesRoundTripWithNestedNames) {
  auto store = PreparedStore();
  const std::vector<std::pair<std::string, std::string>> objects = {
      {"manifests/0000000000000007", "manifest seven"},
      {"packs/00000001-0.pack", PseudoRandom(300 * 1024 + 17, 1)},  // more than one request
      {"a/b/c/d/e.bin", std::string("\0\x01\xff binary", 10)},
      {"empty", ""},
  };
  for (const auto& [name, bytes] : objects) {
    Status s = store->PutBytes(name, bytes);
    ASSERT_TRUE(s.ok()) << name << ": " << s.error().ToString();
  }
  for (const auto& [name, bytes] : objects) {
    auto got = store->GetBytes(name);
    ASSERT_TRUE(got.ok()) << name << ": " << got.error().ToString();
    EXPECT_EQ(*got, bytes) << name;
    EXPECT_EQ(ReadFile(remote_ + "/" + name), bytes) << name;
  }
  // Directories it made are the owner's only.
  EXPECT_EQ(fs::status(remote_ + "/a/b/c").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(FilesOnServer(), (std::vector<std::string>{"a/b/c/d/e.bin", "empty", "manifests/0000000000000007",
                                                       "packs/00000001-0.pack"}));
}

TEST_F(SftpStoreTest, TwentyMebibyteFileRoundTripsByteForByte) {
  auto store = PreparedStore();
  TempDir local;
  const std::string data = PseudoRandom(20 << 20, 20);
  WriteFile(local / "in.pack", data + "trailing bytes past size that must not be sent");
  std::vector<uint64_t> seen;
  Status s =
      store->PutFile("packs/00000020-0.pack", local / "in.pack", data.size(), [&](uint64_t done, uint64_t total) {
        EXPECT_EQ(total, data.size());
        seen.push_back(done);
        return true;
      });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  ASSERT_FALSE(seen.empty());
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(seen.back(), data.size());
  EXPECT_TRUE(ReadFile(remote_ + "/packs/00000020-0.pack") == data);

  auto head = store->Head("packs/00000020-0.pack");
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->size, data.size());

  uint64_t last_done = 0;
  s = store->GetFile("packs/00000020-0.pack", local / "out.pack", [&](uint64_t done, uint64_t total) {
    EXPECT_EQ(total, data.size());
    last_done = done;
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_EQ(last_done, data.size());
  EXPECT_TRUE(ReadFile(local / "out.pack") == data);
  EXPECT_FALSE(fs::exists(local / "out.pack.part"));

  // GetFile truncates what was there.
  WriteFile(local / "small", std::string(30 << 20, 'x'));
  ASSERT_TRUE(store->GetFile("packs/00000020-0.pack", local / "small").ok());
  EXPECT_EQ(fs::file_size(local / "small"), data.size());
}

TEST_F(SftpStoreTest, ListWalksTheTreeWithAPrefixAndSkipsTemporaries) {
  auto store = PreparedStore();
  for (const char* name : {"packs/00000002-0.pack", "packs/00000001-0.pack", "packs/00000001-1.pack", "manifests/1",
                           "manifests/2", "identity", "packsfile"}) {
    ASSERT_TRUE(store->PutBytes(name, name).ok()) << name;
  }
  // What an upload cut off by a dropped link leaves behind, and a file no object name can reach.
  WriteFile(remote_ + "/packs/00000003-0.pack.part-0123456789abcdef", "partial");
  WriteFile(remote_ + "/packs/not an object", "x");

  auto names = [&](const std::string& prefix) {
    auto r = store->List(prefix);
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    std::vector<std::string> out;
    if (r.ok()) {
      for (const auto& o : *r) {
        EXPECT_EQ(o.size, o.name.size()) << o.name;
        out.push_back(o.name);
      }
    }
    return out;
  };
  EXPECT_EQ(names(""), (std::vector<std::string>{"identity", "manifests/1", "manifests/2", "packs/00000001-0.pack",
                                                 "packs/00000001-1.pack", "packs/00000002-0.pack", "packsfile"}));
  EXPECT_EQ(names("packs/"),
            (std::vector<std::string>{"packs/00000001-0.pack", "packs/00000001-1.pack", "packs/00000002-0.pack"}));
  EXPECT_EQ(names("packs"), (std::vector<std::string>{"packs/00000001-0.pack", "packs/00000001-1.pack",
                                                      "packs/00000002-0.pack", "packsfile"}));
  EXPECT_EQ(names("packs/00000001"), (std::vector<std::string>{"packs/00000001-0.pack", "packs/00000001-1.pack"}));
  EXPECT_EQ(names("manifests/2"), (std::vector<std::string>{"manifests/2"}));
  EXPECT_TRUE(names("nothing").empty());
}

TEST_F(SftpStoreTest, HeadAndDeleteIncludingMissingObjects) {
  auto store = PreparedStore();
  auto head = store->Head("manifests/9");
  ASSERT_TRUE(head.ok()) << head.error().ToString();
  EXPECT_FALSE(head->has_value());
  auto got = store->GetBytes("manifests/9");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), ErrorCode::kNotFound) << got.error().ToString();

  ASSERT_TRUE(store->PutBytes("manifests/9", "nine!").ok());
  head = store->Head("manifests/9");
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->name, "manifests/9");
  EXPECT_EQ((*head)->size, 5u);
  // A directory is not an object, and nothing is under a file.
  head = store->Head("manifests");
  ASSERT_TRUE(head.ok());
  EXPECT_FALSE(head->has_value());
  head = store->Head("manifests/9/under");
  ASSERT_TRUE(head.ok()) << head.error().ToString();
  EXPECT_FALSE(head->has_value());
  got = store->GetBytes("manifests/9/under");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), ErrorCode::kNotFound) << got.error().ToString();
  EXPECT_TRUE(store->Delete("manifests/9/under").ok());
  got = store->GetBytes("manifests");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), ErrorCode::kNotFound) << got.error().ToString();

  Status s = store->Delete("manifests/9");
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_FALSE(fs::exists(remote_ + "/manifests/9"));
  head = store->Head("manifests/9");
  ASSERT_TRUE(head.ok());
  EXPECT_FALSE(head->has_value());
  s = store->Delete("manifests/9");
  EXPECT_TRUE(s.ok()) << s.error().ToString();
  s = store->Delete("never/existed/at/all");
  EXPECT_TRUE(s.ok()) << s.error().ToString();
}

TEST_F(SftpStoreTest, OverwriteReplacesTheObjectAndLeavesNoTemporary) {
  auto store = PreparedStore();
  const std::string first = PseudoRandom(600 * 1024, 5), second = "short now";
  ASSERT_TRUE(store->PutBytes("identity", first).ok());
  Status s = store->PutBytes("identity", second);
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  auto got = store->GetBytes("identity");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, second);
  s = store->PutBytes("identity", first);
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_TRUE(ReadFile(remote_ + "/identity") == first);
  EXPECT_EQ(FilesOnServer(), std::vector<std::string>{"identity"});
}

TEST_F(SftpStoreTest, InvalidNamesAreRefused) {
  auto store = PreparedStore();
  for (const std::string& name : std::vector<std::string>{
           "", "/etc/passwd", "../escape", "a/../b", "a//b", "a/./b", "dir/", "with space", "tab\t",
           "packs/1.pack.part-0123456789abcdef", "x.part-", "packs/" + std::string(234, 'n')}) {
    SCOPED_TRACE("name \"" + name + "\"");
    Status s = store->PutBytes(name, "x");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument) << s.error().ToString();
    auto got = store->GetBytes(name);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.error().code(), ErrorCode::kInvalidArgument);
    auto head = store->Head(name);
    ASSERT_FALSE(head.ok());
    EXPECT_EQ(head.error().code(), ErrorCode::kInvalidArgument);
    s = store->Delete(name);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_TRUE(FilesOnServer().empty());
  // The longest segment an SFTP target takes (with the temporary's suffix, 255 bytes).
  const std::string longest = "packs/" + std::string(233, 'n');
  Status s = store->PutBytes(longest, "x");
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  auto got = store->GetBytes(longest);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, "x");
}

TEST_F(SftpStoreTest, UnknownHostKeyIsRefused) {
  // The file pins a key, but for another port: this server is unknown.
  WriteFile(server_->Key("known_hosts"), "[127.0.0.1]:1 " + Trim(ReadFile(server_->Key("host_key.pub"))) + "\n");
  auto store = Store();
  Status s = store->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kBadKey) << s.error().ToString();
  EXPECT_NE(s.error().message().find("not trusted"), std::string::npos) << s.error().ToString();
  EXPECT_NE(s.error().message().find("ssh-keyscan -p " + std::to_string(server_->port()) + " 127.0.0.1 >> " +
                                     server_->Key("known_hosts")),
            std::string::npos)
      << s.error().ToString();
  EXPECT_NE(s.error().message().find("SHA256:"), std::string::npos) << s.error().ToString();
  EXPECT_FALSE(fs::exists(remote_));

  // No file at all is no trust at all (libssh would otherwise say the same as for an unknown key).
  SftpConfig c = Config();
  c.known_hosts = server_->Key("no_such_known_hosts");
  s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kBadKey) << s.error().ToString();
  EXPECT_NE(s.error().message().find("does not exist"), std::string::npos) << s.error().ToString();

  // Pinning the key as the message says makes the same store work.
  WriteFile(server_->Key("known_hosts"), server_->PinLine("127.0.0.1", "host_key"));
  s = store->Prepare(true);
  EXPECT_TRUE(s.ok()) << s.error().ToString();
}

TEST_F(SftpStoreTest, ChangedHostKeyIsRefusedAsAPossibleAttack) {
  WriteFile(server_->Key("known_hosts"), server_->PinLine("127.0.0.1", "other_host_key"));
  Status s = Store()->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kBadKey) << s.error().ToString();
  EXPECT_NE(s.error().message().find("attack"), std::string::npos) << s.error().ToString();
  EXPECT_NE(s.error().message().find("ssh-keygen -R"), std::string::npos) << s.error().ToString();
  EXPECT_FALSE(fs::exists(remote_));

  // A pinned key of another type than the server shows.
  WriteFile(server_->Key("known_hosts"), server_->PinLine("127.0.0.1", "ecdsa_host_key"));
  s = Store()->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kBadKey) << s.error().ToString();
  EXPECT_NE(s.error().message().find("attack"), std::string::npos) << s.error().ToString();
}

TEST_F(SftpStoreTest, ClientKeyNotAuthorizedIsRefused) {
  SftpConfig c = Config();
  c.identity_file = server_->Key("stranger_key");
  Status s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kBadKey) << s.error().ToString();
  EXPECT_NE(s.error().message().find("root@127.0.0.1"), std::string::npos) << s.error().ToString();
  EXPECT_NE(s.error().message().find(c.identity_file), std::string::npos) << s.error().ToString();

  c.identity_file = server_->Key("no_such_key");
  s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument) << s.error().ToString();

  WriteFile(server_->Key("garbage_key"), "not a key\n");
  ::chmod(server_->Key("garbage_key").c_str(), 0600);
  c.identity_file = server_->Key("garbage_key");
  s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kBadKey) << s.error().ToString();
}

TEST_F(SftpStoreTest, ConfigurationThatCannotWorkIsReportedByTheFirstOperation) {
  SftpConfig c = Config();
  c.identity_file.clear();
  Status s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument) << s.error().ToString();
  EXPECT_NE(s.error().message().find("identity file"), std::string::npos) << s.error().ToString();

  c = Config();
  c.known_hosts.clear();
  s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument) << s.error().ToString();
  EXPECT_NE(s.error().message().find("ssh-keyscan"), std::string::npos) << s.error().ToString();

  c = Config();
  c.path = "relative/dir";
  s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument) << s.error().ToString();

  // Nothing listens on port 1: a link error naming the server, not a hang.
  c = Config();
  c.port = 1;
  s = MakeSftpStore(c)->Prepare(true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kIoError) << s.error().ToString();
  EXPECT_NE(s.error().message().find("127.0.0.1:1"), std::string::npos) << s.error().ToString();

  // A trailing '/' in a hand-made configuration changes nothing.
  c = Config();
  c.path = remote_ + "//";
  auto store = MakeSftpStore(c);
  ASSERT_TRUE(store->Prepare(true).ok());
  ASSERT_TRUE(store->PutBytes("x", "y").ok());
  EXPECT_EQ(ReadFile(remote_ + "/x"), "y");
}

TEST_F(SftpStoreTest, ServerKilledMidUploadThenTheSameStoreReconnects) {
  auto store = PreparedStore();
  TempDir local;
  const std::string data = PseudoRandom(24 << 20, 24);
  WriteFile(local / "big.pack", data);
  bool killed = false;
  Status s = store->PutFile("packs/00000024-0.pack", local / "big.pack", data.size(), [&](uint64_t done, uint64_t) {
    if (!killed && done >= (4u << 20)) {
      server_->Kill();
      killed = true;
    }
    return true;
  });
  ASSERT_TRUE(killed);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kIoError) << s.error().ToString();
  EXPECT_NE(s.error().message().find("reconnects"), std::string::npos) << s.error().ToString();
  std::cout << "kill -9 mid-upload: " << s.error().ToString() << "\n";
  EXPECT_FALSE(fs::exists(remote_ + "/packs/00000024-0.pack"));

  // While the server is down: a link error, no hang.
  auto head = store->Head("packs/00000024-0.pack");
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.error().code(), ErrorCode::kIoError) << head.error().ToString();

  server_->Restart();
  s = store->PutFile("packs/00000024-0.pack", local / "big.pack", data.size());
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_TRUE(ReadFile(remote_ + "/packs/00000024-0.pack") == data);
  auto listed = store->List("");
  ASSERT_TRUE(listed.ok()) << listed.error().ToString();
  ASSERT_EQ(listed->size(), 1u);  // the cut-off upload's temporary is not an object
  EXPECT_EQ((*listed)[0].name, "packs/00000024-0.pack");
  EXPECT_EQ((*listed)[0].size, data.size());
}

TEST_F(SftpStoreTest, ConnectionLostWhileIdleIsReplacedBeforeTheNextOperation) {
  auto store = PreparedStore();
  ASSERT_TRUE(store->PutBytes("one", "1").ok());
  server_->Kill();
  server_->Restart();
  Status s = store->PutBytes("two", "2");
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_EQ(FilesOnServer(), (std::vector<std::string>{"one", "two"}));
}

TEST_F(SftpStoreTest, StalledServerEndsTheTransferAfterTheStallTimeout) {
  SftpConfig c = Config();
  c.transfer.stall_timeout_seconds = 2;
  auto store = MakeSftpStore(c);
  ASSERT_TRUE(store->Prepare(true).ok());
  const std::string data = PseudoRandom(24 << 20, 7);
  TempDir local;
  WriteFile(local / "big.pack", data);
  bool stopped = false;
  auto start = std::chrono::steady_clock::now();
  Status s = store->PutFile("packs/stalled.pack", local / "big.pack", data.size(), [&](uint64_t done, uint64_t) {
    if (!stopped && done >= (4u << 20)) {
      server_->SignalSessions(SIGSTOP);  // the connection stays up, nothing moves
      stopped = true;
    }
    return true;
  });
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  server_->SignalSessions(SIGKILL);
  server_->SignalSessions(SIGCONT);
  ASSERT_TRUE(stopped);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kIoError) << s.error().ToString();
  EXPECT_NE(s.error().message().find("stall"), std::string::npos) << s.error().ToString();
  std::cout << "stalled server: " << s.error().ToString() << " (after " << took << " s)\n";
  EXPECT_LT(took, 60.0);
  EXPECT_FALSE(fs::exists(remote_ + "/packs/stalled.pack"));

  ASSERT_TRUE(store->PutBytes("after", "reconnected").ok());
  auto got = store->GetBytes("after");
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, "reconnected");
}

TEST_F(SftpStoreTest, ProgressReturningFalseStopsAndStoresNothing) {
  auto store = PreparedStore();
  TempDir local;
  const std::string data = PseudoRandom(2 << 20, 9);
  WriteFile(local / "f", data);
  Status s =
      store->PutFile("packs/p", local / "f", data.size(), [](uint64_t done, uint64_t) { return done < (1u << 20); });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kIoError);
  EXPECT_NE(s.error().message().find("stopped"), std::string::npos) << s.error().ToString();
  EXPECT_TRUE(FilesOnServer().empty());  // the temporary was removed
  EXPECT_TRUE(store->PutBytes("still", "works").ok());
}

TEST_F(SftpStoreTest, BandwidthLimitIsHonouredBothWays) {
  SftpConfig c = Config();
  c.transfer.bwlimit = 1 << 20;
  auto store = MakeSftpStore(c);
  ASSERT_TRUE(store->Prepare(true).ok());
  const std::string data = PseudoRandom(2 << 20, 2);
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(store->PutBytes("limited", data).ok());
  double up = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  start = std::chrono::steady_clock::now();
  auto got = store->GetBytes("limited");
  double down = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == data);
  std::cout << "2 MiB at 1 MiB/s: up " << up << " s, down " << down << " s\n";
  EXPECT_GE(up, 1.5);
  EXPECT_GE(down, 1.5);
}

TEST_F(SftpStoreTest, FullServerDiskSaysTheDiskMayBeFull) {
  fs::create_directories(remote_);
  if (::mount("tmpfs", remote_.c_str(), "tmpfs", 0, "size=1m,mode=0700") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << strerror(errno) << "); the full-disk case needs it";
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{remote_};
  auto store = PreparedStore();
  Status s = store->PutBytes("packs/too-big.pack", PseudoRandom(2 << 20, 3));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kIoError) << s.error().ToString();
  EXPECT_NE(s.error().message().find("the server's disk may be full"), std::string::npos) << s.error().ToString();
  std::cout << "full disk: " << s.error().ToString() << "\n";
  EXPECT_TRUE(FilesOnServer().empty());  // no object, and the temporary was removed
  // Removing the temporary gave the space back.
  s = store->PutBytes("packs/small.pack", "fits");
  EXPECT_TRUE(s.ok()) << s.error().ToString();
}

TEST_F(SftpStoreTest, IPv6LoopbackWorks) {
  if (!Accepts(AF_INET6, server_->port())) GTEST_SKIP() << "sshd could not listen on [::1] here";
  WriteFile(server_->Key("known_hosts"), server_->PinLine("::1", "host_key"));
  SftpConfig c = Config();
  auto parsed = ParseSftpUrl("sftp://root@[::1]:" + std::to_string(server_->port()) + remote_);
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  parsed->identity_file = c.identity_file;
  parsed->known_hosts = c.known_hosts;
  auto store = MakeSftpStore(*parsed);
  Status s = store->Prepare(true);
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  ASSERT_TRUE(store->PutBytes("v6", "over ::1").ok());
  EXPECT_EQ(ReadFile(remote_ + "/v6"), "over ::1");
}

}  // namespace
}  // namespace mailvault::replication
