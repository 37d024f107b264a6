#include "server/http_server.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <regex>

#include <httplib.h>

#include "core/error.h"
#include "server/generation_handler.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace tachyon::server {

struct HttpServer::Impl {
  Impl(InferenceEngine& engine, const Tokenizer& tokenizer, ServerOptions options)
      : options(std::move(options)), generation(engine, tokenizer, metrics, this->options) {}

  void install_routes();
  bool authorized(const httplib::Request& req) const;

  ServerOptions options;
  Metrics metrics;
  GenerationHandler generation;
  httplib::Server http;
  int64_t started_unix = static_cast<int64_t>(std::time(nullptr));
};

namespace {

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

// Constant-time comparison: the time to reject a key says nothing about how much of it matched.
bool same_secret(const std::string& given, const std::string& key) {
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < std::max(given.size(), key.size()); ++i)
    diff |= static_cast<unsigned char>((i < given.size() ? given[i] : 0) ^ (i < key.size() ? key[i] : 0));
  return diff == 0;
}

// A request path for the log: printable ASCII, other bytes as \xHH, at most 200 characters.
std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? std::string(1, c) : fmt::format("\\x{:02x}", c);
  return text.size() > 200 ? out + "..." : out;
}

const char* const kModelRoute = R"(/v1/models/(.+))";

// Route label for metrics: the route's pattern, never the raw path (unbounded label values).
std::string route_label(const httplib::Request& req) {
  static const std::regex model_route(kModelRoute);
  for (const char* route : {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"})
    if (req.path == route) return route;
  if (std::regex_match(req.path, model_route)) return "/v1/models/{id}";
  return "unmatched";
}

// The reason phrase of the statuses the error handler may see without a body of its own.
const char* status_text(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Server Error" : "Client Error";
  }
}

}  // namespace

bool HttpServer::Impl::authorized(const httplib::Request& req) const {
  if (options.api_key.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (header.size() <= prefix.size() || header.compare(0, prefix.size(), prefix) != 0) return false;
  return same_secret(header.substr(prefix.size()), options.api_key);
}

void HttpServer::Impl::install_routes() {
  // Runs before the body is read: refusals (no key, a declared body over the limit) cost no reading.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.path != "/health" && !authorized(req)) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_json(res, 401,
                error_body(ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'", "",
                                    "invalid_api_key")));
      return httplib::Server::HandlerResponse::Handled;
    }
    const std::string length = req.get_header_value("Content-Length");
    if (length.size() > 18 || (!length.empty() && std::stoull("0" + length) > options.max_body_bytes)) {
      send_json(res, 413, error_body(ApiError(413, fmt::format("The request body is larger than {} bytes", options.max_body_bytes),
                                              "", "request_too_large")));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  http.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"status", "ok"}}); });

  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(generation.engine().stats(), generation.engine().max_waiting()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });

  auto model_json = [this] {
    return nlohmann::json{{"id", options.model_name},
                          {"object", "model"},
                          {"created", started_unix},
                          {"owned_by", "tachyon"},
                          {"max_model_len", generation.engine().model_info().max_context}};
  };
  http.Get("/v1/models", [model_json](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", nlohmann::json::array({model_json()})}});
  });
  http.Get(kModelRoute, [this, model_json](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (id != options.model_name) {
      send_json(res, 404, error_body(ApiError(404, fmt::format("The model '{}' does not exist; this server serves '{}'",
                                                               id, options.model_name),
                                              "model", "model_not_found")));
      return;
    }
    send_json(res, 200, model_json());
  });

  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generation.handle(req, res, Endpoint::completions);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generation.handle(req, res, Endpoint::chat_completions);
  });

  // Every 4xx/5xx that a handler did not fill (unknown route, wrong method, body too large, a request
  // httplib could not parse) still gets an OpenAI-style JSON body.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return httplib::Server::HandlerResponse::Unhandled;
    std::string message;
    std::string code;
    switch (res.status) {
      case 404: message = fmt::format("Unknown route: {} {}", req.method, req.path); code = "not_found"; break;
      case 405: message = fmt::format("Method {} is not allowed on {}", req.method, req.path); break;
      case 413: message = "The request body is too large"; code = "request_too_large"; break;
      case 414: message = "The request URI is too long"; break;
      default: message = fmt::format("{} {}", res.status, status_text(res.status)); break;
    }
    send_json(res, res.status, error_body(ApiError(res.status, message, "", code,
                                                   res.status >= 500 ? "server_error" : "invalid_request_error")));
    return httplib::Server::HandlerResponse::Handled;
  }));

  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "server: internal error: %s\n", what.c_str());
    send_json(res, 500, error_body(ApiError(500, "internal server error: " + what, "", "", "server_error")));
  });

  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_response(route_label(req), res.status);
    if (options.log_requests)
      std::fprintf(stderr, "%s %s -> %d\n", printable(req.method).c_str(), printable(req.path).c_str(), res.status);
  });
}

HttpServer::HttpServer(InferenceEngine& engine, const Tokenizer& tokenizer, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(options))) {
  const ServerOptions& o = impl_->options;
  if (o.model_name.empty()) fail("serve: the model name is empty");
  if (!(o.request_timeout_seconds > 0)) fail("serve: --request-timeout must be > 0, got {}", o.request_timeout_seconds);
  // Every connection holds a thread while its request runs (a stream for its whole length): room for
  // every running and queued request, plus spare for /health, /metrics and requests answered 429.
  const size_t threads =
      o.http_threads > 0 ? static_cast<size_t>(o.http_threads) : engine.max_running() + engine.max_waiting() + 16;
  impl_->http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  impl_->http.set_payload_max_length(o.max_body_bytes);
  impl_->http.set_read_timeout(30, 0);
  impl_->http.set_write_timeout(30, 0);
  impl_->http.set_keep_alive_timeout(5);
  impl_->http.set_tcp_nodelay(true);  // stream chunks are small and latency-bound
  impl_->install_routes();
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  const ServerOptions& o = impl_->options;
  if (o.port == 0) {
    const int port = impl_->http.bind_to_any_port(o.host);
    if (port < 0) fail("serve: cannot bind {} to any port", o.host);
    return port;
  }
  if (o.port < 0 || o.port > 65535) fail("serve: --port {} is not a TCP port", o.port);
  if (!impl_->http.bind_to_port(o.host, o.port)) fail("serve: cannot bind {}:{} (in use, or not an address of this host?)", o.host, o.port);
  return o.port;
}

void HttpServer::serve() { impl_->http.listen_after_bind(); }

void HttpServer::stop() {
  impl_->generation.shut_down();
  impl_->http.stop();  // safe before, during or after serve(): it releases the listening socket
}

}  // namespace tachyon::server
