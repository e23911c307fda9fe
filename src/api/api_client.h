// ApiClient: one HTTP/1.1 request to ringvm's (or Firecracker's) API on a Unix socket, for
// `ringvm ctl`, the tests and the benchmarks. Blocking, with a deadline.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"

namespace ringvm {

struct ApiResult {
  int status = 0;
  std::string body;
};

class ApiClient {
 public:
  // Connects now; fails with kNotFound (no such socket) or kIo (nobody listening), naming the path.
  static Result<ApiClient> connect(const std::string& socket_path,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(30));
  ApiClient(ApiClient&&) noexcept;
  ApiClient& operator=(ApiClient&&) noexcept;
  ~ApiClient();

  // One request on the kept-alive connection. `body` empty: none sent.
  Result<ApiResult> request(std::string_view method, std::string_view target, std::string_view body = {});

 private:
  struct Impl;
  explicit ApiClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Connect, one request, close.
Result<ApiResult> api_request(const std::string& socket_path, std::string_view method,
                              std::string_view target, std::string_view body = {},
                              std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace ringvm
