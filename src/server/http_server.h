// The OpenAI-compatible HTTP server of `tachyon serve`:
//   POST /v1/completions, POST /v1/chat/completions   (JSON, or server-sent events with "stream": true)
//   GET  /v1/models, /v1/models/{id}, /health, /metrics
// over any InferenceEngine. Each connection has a thread (cpp-httplib's pool); a generation handler
// validates and tokenizes in that thread, submits to the engine and waits on its RequestStream, so
// the engine thread never touches a socket. A client that disconnects cancels its request.
#pragma once
#include <memory>
#include <string>

#include "runtime/engine.h"
#include "tokenizer/tokenizer.h"

namespace tachyon::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0 = any free port (see HttpServer::bind)
  std::string api_key;                   // "" = no authentication
  std::string model_name;                // the id clients send as "model" and /v1/models lists
  double request_timeout_seconds = 600;  // per request, from arrival; a request may ask for less
  size_t max_body_bytes = 8 << 20;
  int http_threads = 0;                  // 0 = enough for every running and queued request, plus spare
  bool log_requests = true;              // one line per request on stderr
};

class HttpServer {
 public:
  // The engine and tokenizer must outlive the server.
  HttpServer(InferenceEngine& engine, const Tokenizer& tokenizer, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds options.host:options.port and returns the port bound. Throws Error when it cannot.
  int bind();
  // Serves until stop() (from another thread or a signal thread). bind() first.
  void serve();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tachyon::server
