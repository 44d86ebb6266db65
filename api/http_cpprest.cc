#include "api/http_cpprest.h"

#include <cpprest/filestream.h>
#include <cpprest/http_listener.h>
#include <openssl/ssl.h>
#include <pplx/threadpool.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "api/worker_pool.h"
#include "core/file_util.h"

namespace mailvault::api {

namespace http = web::http;
using http::experimental::listener::http_listener;
using http::experimental::listener::http_listener_config;

class HttpServer::Impl {
 public:
  Impl(ApiService* service, HttpServerOptions options) : service_(service), options_(std::move(options)) {}

  Status Start() {
    http_listener_config config;
    if (options_.uri.rfind("https://", 0) == 0) {
      MV_ASSIGN_OR_RETURN(std::string cert, ReadSmallFile(options_.certificate_file, 1 << 20));
      MV_ASSIGN_OR_RETURN(std::string key, ReadSmallFile(options_.key_file, 1 << 20));
      // Checked once here, so a bad file stops serve at start instead of failing every
      // connection: the listener builds a new context per connection through this callback.
      auto pems = std::make_shared<const std::pair<std::string, std::string>>(std::move(cert), std::move(key));
      try {
        boost::asio::ssl::context probe(boost::asio::ssl::context::tls_server);
        Configure(probe, *pems);
      } catch (const std::exception& e) {
        return InvalidArgument("the API's TLS certificate or key (" + options_.certificate_file + ", " + options_.key_file +
                               ") cannot be used: " + e.what());
      }
      config.set_ssl_context_callback([pems](boost::asio::ssl::context& ctx) { Configure(ctx, *pems); });
    }
    // The workers exist before the first request can arrive.
    workers_ = std::make_unique<WorkerPool>(options_.workers, options_.max_queued);
    try {
      listener_ = std::make_unique<http_listener>(web::uri(options_.uri), config);
      listener_->support([this](http::http_request req) { Accept(std::move(req)); });
      listener_->open().wait();
    } catch (const std::exception& e) {
      return IoError("cannot listen on " + options_.uri + ": " + e.what());
    }
    return Status::Ok();
  }

  void Stop() {
    if (listener_) {
      try {
        listener_->close().wait();
      } catch (const std::exception&) {
      }
    }
    if (workers_) workers_->Stop();
    listener_.reset();
  }

  const std::string& uri() const { return options_.uri; }

 private:
  static void Configure(boost::asio::ssl::context& ctx, const std::pair<std::string, std::string>& pems) {
    ctx.set_options(boost::asio::ssl::context::default_workarounds | boost::asio::ssl::context::no_sslv2 |
                    boost::asio::ssl::context::no_sslv3 | boost::asio::ssl::context::single_dh_use);
    ctx.use_certificate_chain(boost::asio::buffer(pems.first));
    ctx.use_private_key(boost::asio::buffer(pems.second), boost::asio::ssl::context::pem);
    // TLS 1.0 and 1.1 are refused (RFC 8996).
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  }

  static void Reply(http::http_request& req, const Response& r) {
    http::http_response resp(static_cast<http::status_code>(r.status));
    for (const auto& [k, v] : r.headers) resp.headers().add(k, v);
    try {
      if (!r.file.empty()) {
        auto stream = concurrency::streams::file_stream<uint8_t>::open_istream(r.file).get();
        resp.set_body(stream, r.file_size, r.content_type);
      } else if (r.status != 204 && r.status != 304) {
        // As bytes: set_body(std::string) reads a char buffer through an unsigned char stream
        // (a cast UBSan's vptr check rejects, inside cpprest's headers), and mail is bytes anyway.
        resp.set_body(std::vector<unsigned char>(r.body.begin(), r.body.end()));
        resp.headers().set_content_type(r.content_type);
      }
    } catch (const std::exception& e) {
      resp = http::http_response(http::status_codes::InternalError);
      std::string body = "{\"status\":500,\"detail\":\"cannot send the file\"}";
      resp.set_body(std::vector<unsigned char>(body.begin(), body.end()));
      resp.headers().set_content_type("application/problem+json");
    }
    req.reply(resp).then([](pplx::task<void> t) {
      try {
        t.get();
      } catch (const std::exception&) {
        // The client went away: nothing to do.
      }
    });
  }

  void ReplyProblem(http::http_request& req, int status, const std::string& slug, const std::string& detail) {
    Response r = Problem(status, slug, detail);
    if (status == 503) r.headers.emplace_back("Retry-After", "1");
    Reply(req, r);
  }

  // On a listener thread: never blocks.
  void Accept(http::http_request req) {
    const auto& h = req.headers();
    auto len = h.find("Content-Length");
    if (len != h.end()) {
      char* end = nullptr;
      unsigned long long n = std::strtoull(len->second.c_str(), &end, 10);
      if (len->second.empty() || *end || n > options_.max_body_bytes) {
        ReplyProblem(req, 413, "too-large", "request bodies are limited to " + std::to_string(options_.max_body_bytes) + " bytes");
        return;
      }
    }
    req.extract_vector().then([this, req](pplx::task<std::vector<unsigned char>> t) mutable {
      std::vector<unsigned char> body;
      try {
        body = t.get();
      } catch (const std::exception&) {
        return;  // the connection broke while the body was read
      }
      if (body.size() > options_.max_body_bytes) {
        ReplyProblem(req, 413, "too-large", "request bodies are limited to " + std::to_string(options_.max_body_bytes) + " bytes");
        return;
      }
      if (workers_->Submit([this, req, body = std::move(body)]() mutable { Run(req, std::move(body)); })) return;
      ReplyProblem(req, 503, "busy", "the server is busy or stopping; try again");
    });
  }

  void Run(http::http_request& req, std::vector<unsigned char> body) {
    Request r;
    r.method = req.method();
    const web::uri& u = req.request_uri();
    r.path = u.path();
    r.query = ParseQueryString(u.query());
    for (const auto& [k, v] : req.headers()) {
      std::string name = k;
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = v;
    }
    // cpprest joins repeated headers with ", "; a bearer token never contains a comma.
    if (auto a = r.headers.find("authorization"); a != r.headers.end()) {
      r.authorization_headers = a->second.find(',') == std::string::npos ? 1 : 2;
    }
    r.body.assign(body.begin(), body.end());
    r.peer = req.remote_address();
    r.request_id = std::to_string(++next_id_);
    Response resp = service_->Handle(r);
    if (resp.stream) {
      // cpprestsdk's listener cannot write an answer as it happens: event streams need the
      // default transport (Beast).
      resp = Problem(501, "not-implemented", "event streams are served by the default transport (transport = beast in [api])");
    }
    Reply(req, resp);
  }

  ApiService* service_;
  HttpServerOptions options_;
  std::unique_ptr<http_listener> listener_;
  std::unique_ptr<WorkerPool> workers_;
  std::atomic<uint64_t> next_id_{0};
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }
void HttpServer::Stop() {
  if (impl_) impl_->Stop();
}
const std::string& HttpServer::uri() const { return impl_->uri(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Start(ApiService* service, const HttpServerOptions& options) {
  // cpprestsdk's pool must be sized before anything touches it, once per process. Its threads
  // only read requests and write replies (handlers run on our workers), so a few suffice; 8
  // keeps slow clients from occupying all of them.
  static std::once_flag pool_once;
  std::call_once(pool_once, [] { crossplat::threadpool::initialize_with_threads(8); });
  auto impl = std::make_unique<Impl>(service, options);
  MV_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

}  // namespace mailvault::api
