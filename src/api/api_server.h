// ApiServer: HTTP/1.1 on a Unix socket (Boost.Beast over Asio), serving an ApiHandler.
//
// Every connection is asynchronous on a small pool of threads: a client that sends half a
// request and stalls holds no thread, and is dropped after kReadTimeout. Requests on one
// connection are answered in order (keep-alive); a request's handler runs on a pool thread, so
// a slow one (InstanceStart builds the VM) holds that thread only.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "api/api_handler.h"
#include "base/result.h"

namespace ringvm {

class ApiServer {
 public:
  static constexpr std::chrono::seconds kReadTimeout{10};
  static constexpr unsigned kThreads = 4;
  // Connections beyond this are closed at once (each costs a buffer and a file descriptor).
  static constexpr size_t kMaxConnections = 256;

  // Creates the socket at `path` with mode 0600: a stale socket file (nobody listening) is
  // replaced; a live one, or any other file, is refused with the reason.
  static Result<std::unique_ptr<ApiServer>> start(const std::string& path, ApiHandler& handler);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Stops accepting, closes every connection, joins the threads and removes the socket file.
  void stop();
  const std::string& path() const;

  struct Impl;

 private:
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Binds a listening Unix socket at `path` (0600), with the stale/live checks above. Exposed for
// tests.
Result<int> bind_api_socket(const std::string& path);

}  // namespace ringvm
