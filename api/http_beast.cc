#include "api/http_beast.h"

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "api/worker_pool.h"
#include "core/file_util.h"

namespace mailvault::api {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr size_t kHeaderLimit = 16 << 10;
constexpr auto kRequestTimeout = std::chrono::seconds(15);
constexpr auto kIdleTimeout = std::chrono::seconds(60);
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
constexpr auto kWriteTimeout = std::chrono::seconds(60);
constexpr uint64_t kSlowestClientBytesPerSecond = 256 << 10;

// Splits "http[s]://HOST:PORT" ("[v6]" hosts too).
Status ParseUri(const std::string& uri, bool* tls, std::string* host, uint16_t* port) {
  *tls = uri.rfind("https://", 0) == 0;
  std::string rest = uri.substr(*tls ? 8 : 7);
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("the API address needs a port: " + uri);
  *host = rest.substr(0, colon);
  if (host->size() > 2 && host->front() == '[') *host = host->substr(1, host->size() - 2);
  char* end = nullptr;
  unsigned long p = std::strtoul(rest.c_str() + colon + 1, &end, 10);
  if (*end || p > 65535) return InvalidArgument("bad port in " + uri);
  *port = static_cast<uint16_t>(p);
  return Status::Ok();
}

}  // namespace

class BeastServer::Impl {
 public:
  Impl(ApiService* service, HttpServerOptions options)
      : service_(service), options_(std::move(options)), ssl_(net::ssl::context::tls_server) {}

  Status Start() {
    bool tls = false;
    std::string host;
    uint16_t port = 0;
    MV_RETURN_IF_ERROR(ParseUri(options_.uri, &tls, &host, &port));
    if (tls) {
      MV_ASSIGN_OR_RETURN(std::string cert, ReadSmallFile(options_.certificate_file, 1 << 20));
      MV_ASSIGN_OR_RETURN(std::string key, ReadSmallFile(options_.key_file, 1 << 20));
      try {
        ssl_.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3 |
                         net::ssl::context::single_dh_use);
        ssl_.use_certificate_chain(net::buffer(cert));
        ssl_.use_private_key(net::buffer(key), net::ssl::context::pem);
      } catch (const std::exception& e) {
        return InvalidArgument("the API's TLS certificate or key (" + options_.certificate_file + ", " + options_.key_file +
                               ") cannot be used: " + e.what());
      }
      // TLS 1.0 and 1.1 are refused (RFC 8996).
      SSL_CTX_set_min_proto_version(ssl_.native_handle(), TLS1_2_VERSION);
      tls_ = true;
    }
    beast::error_code ec;
    tcp::endpoint ep(net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec), port);
    if (ec) return InvalidArgument("the API address " + host + " is not an IP address");
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return IoError("cannot listen on " + options_.uri + ": " + ec.message());
    port_ = acceptor_.local_endpoint().port();
    workers_ = std::make_unique<WorkerPool>(options_.workers, options_.max_queued);
    Accept();  // handlers run once the io threads below start
    for (int i = 0; i < 2; ++i) io_threads_.emplace_back([this] { ioc_.run(); });
    return Status::Ok();
  }

  void Stop() {
    if (stopped_.exchange(true)) return;
    net::post(acceptor_.get_executor(), [this] {
      beast::error_code ec;
      acceptor_.close(ec);
      accept_retry_.cancel();
    });
    if (workers_) workers_->Stop();  // requests already taken are answered
    // Give the answers a moment to be written, then stop the io threads.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ioc_.stop();
    for (std::thread& t : io_threads_) t.join();
  }

  uint16_t port() const { return port_; }

  // Runs job on a worker; false when the queue is full or the server is stopping.
  bool Submit(std::function<void()> job) { return workers_->Submit(std::move(job)); }
  ApiService* service() { return service_; }
  const HttpServerOptions& options() const { return options_; }
  std::atomic<size_t>& connections() { return connections_; }
  uint64_t NextRequestId() { return ++next_id_; }

 private:
  void Accept();
  ApiService* service_;
  HttpServerOptions options_;
  net::ssl::context ssl_;
  bool tls_ = false;
  uint16_t port_ = 0;
  std::vector<std::thread> io_threads_;
  std::unique_ptr<WorkerPool> workers_;
  std::atomic<bool> stopped_{false};
  std::atomic<size_t> connections_{0};
  std::atomic<uint64_t> next_id_{0};
  // Declared last, so destroyed first: handlers still queued in it (sessions) are freed while
  // everything they point to is alive.
  net::io_context ioc_;
  // The acceptor and its handlers run on one strand, so Stop's close never races an accept.
  tcp::acceptor acceptor_{net::make_strand(ioc_)};
  net::steady_timer accept_retry_{acceptor_.get_executor()};
};

namespace {

constexpr auto kStreamWriteTimeout = std::chrono::seconds(30);

// One connection: read a request (bounded), hand it to a worker, write the answer, repeat
// while the client keeps the connection alive. Stream is beast::tcp_stream or its TLS wrapper.
template <typename Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(BeastServer::Impl* server, Stream stream, std::string peer)
      : server_(server), stream_(std::move(stream)), peer_(std::move(peer)) {
    ++server_->connections();
  }
  ~Session() { --server_->connections(); }

  void Run() {
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      beast::get_lowest_layer(stream_).expires_after(kHandshakeTimeout);
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (!ec) self->Read();
                              });
    } else {
      Read();
    }
  }

 private:
  void Read() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(server_->options().max_body_bytes);
    // The first request gets the request timeout; later ones first wait as idle keep-alive.
    beast::get_lowest_layer(stream_).expires_after(first_ ? kRequestTimeout : kIdleTimeout);
    first_ = false;
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset) {
      return Close();
    }
    if (ec) {
      // Refused as soon as the framing says so; the rest of the request is never read.
      int status = ec == http::error::body_limit ? 413 : ec == http::error::header_limit ? 431 : 400;
      std::string detail = status == 413 ? "request bodies are limited to " + std::to_string(server_->options().max_body_bytes) + " bytes"
                           : status == 431 ? "request headers are limited to " + std::to_string(kHeaderLimit) + " bytes"
                                           : "malformed HTTP request: " + ec.message();
      Response r = Problem(status, status == 413 ? "too-large" : status == 431 ? "headers-too-large" : "bad-request", detail,
                           std::to_string(server_->NextRequestId()));
      return Write(std::move(r), false);
    }
    http::request<http::string_body> req = parser_->release();
    const bool keep_alive = req.keep_alive();
    auto request = std::make_shared<Request>();
    request->method = std::string(req.method_string());
    std::string_view target(req.target().data(), req.target().size());
    size_t q = target.find('?');
    request->path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) request->query = ParseQueryString(target.substr(q + 1));
    for (const auto& f : req) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (name == "authorization") ++request->authorization_headers;
      std::string& v = request->headers[name];
      v += (v.empty() ? "" : ", ") + std::string(f.value());
    }
    request->body = std::move(req.body());
    request->peer = peer_;
    request->request_id = std::to_string(server_->NextRequestId());
    // No timeout while the handler works (an export download or a big search is not the
    // client's fault); the write gets its own.
    beast::get_lowest_layer(stream_).expires_never();
    auto self = this->shared_from_this();
    bool queued = server_->Submit([self, request, keep_alive] {
      Response r = self->server_->service()->Handle(*request);
      if (r.stream) return self->WriteStreamed(std::move(r));
      net::post(self->stream_.get_executor(), [self, r = std::move(r), keep_alive]() mutable { self->Write(std::move(r), keep_alive); });
    });
    if (!queued) {
      Response r = Problem(503, "busy", "the server is busy or stopping; try again", request->request_id);
      r.headers.emplace_back("Retry-After", "1");
      Write(std::move(r), false);
    }
  }

  template <typename Body>
  void Send(http::response<Body>&& res, bool keep_alive, uint64_t bytes) {
    auto msg = std::make_shared<http::response<Body>>(std::move(res));
    msg->keep_alive(keep_alive);
    msg->prepare_payload();
    // The whole answer must be written within a time that grows with its size: 60 s, plus a
    // second per 256 KiB (an export of 10 GB may take 11 hours at the slowest rate allowed).
    beast::get_lowest_layer(stream_).expires_after(kWriteTimeout + std::chrono::seconds(bytes / kSlowestClientBytesPerSecond));
    http::async_write(stream_, *msg, [self = this->shared_from_this(), msg, keep_alive](beast::error_code ec, size_t) {
      if (ec || !keep_alive) return self->Close();
      self->Read();
    });
  }

  void Write(Response r, bool keep_alive) {
    auto fill = [&](auto& res) {
      for (const auto& [k, v] : r.headers) res.insert(k, v);
      if (!r.content_type.empty()) res.set(http::field::content_type, r.content_type);
    };
    if (!r.file.empty()) {
      http::response<http::file_body> res(static_cast<http::status>(r.status), 11);
      beast::error_code ec;
      res.body().open(r.file.c_str(), beast::file_mode::scan, ec);
      if (!ec) {
        fill(res);
        return Send(std::move(res), keep_alive, r.file_size);
      }
      r = Problem(500, "internal", "cannot read the file to send: " + ec.message());
    }
    http::response<http::string_body> res(static_cast<http::status>(r.status), 11);
    fill(res);
    const uint64_t bytes = r.body.size();
    res.body() = std::move(r.body);
    Send(std::move(res), keep_alive, bytes);
  }

  // A streamed answer (server-sent events), on the worker thread that made it: each write is
  // posted to the connection's strand and waited for, with a timeout, so a client that stops
  // reading costs a worker 30 s at most. HTTP/1.1 without a length: the body ends at close.
  void WriteStreamed(Response r) {
    auto self = this->shared_from_this();
    auto write = [self](std::string_view data) -> bool {
      auto done = std::make_shared<std::promise<bool>>();
      std::future<bool> result = done->get_future();
      auto bytes = std::make_shared<std::string>(data);
      net::post(self->stream_.get_executor(), [self, bytes, done] {
        beast::get_lowest_layer(self->stream_).expires_after(kStreamWriteTimeout);
        net::async_write(self->stream_, net::buffer(*bytes),
                         [bytes, done](beast::error_code ec, size_t) { done->set_value(!ec); });
      });
      // A stopped server drops the handler unrun: the promise breaks and get() throws.
      if (result.wait_for(kStreamWriteTimeout + std::chrono::seconds(5)) != std::future_status::ready) return false;
      try {
        return result.get();
      } catch (const std::future_error&) {
        return false;
      }
    };
    std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + StatusText(r.status) + "\r\n";
    if (!r.content_type.empty()) head += "Content-Type: " + r.content_type + "\r\n";
    for (const auto& [k, v] : r.headers) head += k + ": " + v + "\r\n";
    head += "Connection: close\r\n\r\n";
    if (write(head)) r.stream(write);
    net::post(stream_.get_executor(), [self] { self->Close(); });
  }

  void Close() {
    beast::error_code ec;
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
    } else {
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  BeastServer::Impl* server_;  // outlives every session (see ioc_)
  Stream stream_;
  std::string peer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool first_ = true;
};

}  // namespace

void BeastServer::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [self = this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !self->acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors (EMFILE) and the like: try again shortly instead of spinning.
      self->accept_retry_.expires_after(std::chrono::milliseconds(100));
      self->accept_retry_.async_wait([self](beast::error_code wait_ec) {
        if (!wait_ec && self->acceptor_.is_open()) self->Accept();
      });
      return;
    }
    {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      tcp::endpoint remote = socket.remote_endpoint(ignored);
      std::string peer = remote.address().to_string();
      if (self->connections_.load() >= self->options_.max_connections) {
        socket.close(ignored);  // over the limit: closed at once, costing nothing
      } else if (self->tls_) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
            self, beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), self->ssl_), peer)
            ->Run();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(self, beast::tcp_stream(std::move(socket)), peer)->Run();
      }
    }
    self->Accept();
  });
}

BeastServer::BeastServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BeastServer::~BeastServer() { Stop(); }
void BeastServer::Stop() {
  if (impl_) impl_->Stop();
}
uint16_t BeastServer::port() const { return impl_->port(); }

Result<std::unique_ptr<BeastServer>> BeastServer::Start(ApiService* service, const HttpServerOptions& options) {
  auto impl = std::make_unique<Impl>(service, options);
  MV_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<BeastServer>(new BeastServer(std::move(impl)));
}

}  // namespace mailvault::api
