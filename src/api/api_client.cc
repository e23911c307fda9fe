#include "api/api_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace ringvm {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Proto = asio::local::stream_protocol;

struct ApiClient::Impl {
  std::string path;
  std::chrono::milliseconds timeout;
  asio::io_context ioc;
  beast::basic_stream<Proto> stream{ioc};
  beast::flat_buffer buffer;
};

ApiClient::ApiClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ApiClient::ApiClient(ApiClient&&) noexcept = default;
ApiClient& ApiClient::operator=(ApiClient&&) noexcept = default;
ApiClient::~ApiClient() {
  if (!impl_) return;
  beast::error_code ignored;
  impl_->stream.socket().shutdown(Proto::socket::shutdown_both, ignored);
}

Result<ApiClient> ApiClient::connect(const std::string& socket_path, std::chrono::milliseconds timeout) {
  auto impl = std::make_unique<Impl>();
  impl->path = socket_path;
  impl->timeout = timeout;
  beast::error_code ec;
  impl->stream.socket().connect(Proto::endpoint(socket_path), ec);
  if (ec == boost::system::errc::no_such_file_or_directory)
    return make_error(ErrorCode::kNotFound,
                      "--api-sock {}: no such socket (is ringvm running with --api-sock {}?)", socket_path,
                      socket_path);
  if (ec)
    return make_error(ErrorCode::kIo,
                      "--api-sock {}: cannot connect: {} (is the ringvm serving it still running?)",
                      socket_path, ec.message());
  return ApiClient(std::move(impl));
}

Result<ApiResult> ApiClient::request(std::string_view method, std::string_view target,
                                     std::string_view body) {
  Impl& c = *impl_;
  http::request<http::string_body> req;
  req.method_string(beast::string_view(method.data(), method.size()));
  req.target(beast::string_view(target.data(), target.size()));
  req.version(11);
  req.set(http::field::host, "localhost");
  req.set(http::field::user_agent, "ringvm-ctl");
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(body);
  }
  req.keep_alive(true);
  req.prepare_payload();
  // The deadline covers the whole exchange: asio's synchronous calls have none, so run the
  // asynchronous ones on this thread.
  beast::error_code result;
  http::response<http::string_body> res;
  c.stream.expires_after(c.timeout);
  http::async_write(c.stream, req, [&](beast::error_code ec, size_t) {
    if (ec) {
      result = ec;
      return;
    }
    http::async_read(c.stream, c.buffer, res, [&](beast::error_code ec2, size_t) { result = ec2; });
  });
  c.ioc.restart();
  c.ioc.run();
  if (result == beast::error::timeout)
    return make_error(ErrorCode::kIo, "--api-sock {}: {} {}: no answer within {} ms", c.path, method, target,
                      c.timeout.count());
  if (result)
    return make_error(ErrorCode::kIo, "--api-sock {}: {} {}: {}", c.path, method, target, result.message());
  return ApiResult{static_cast<int>(res.result_int()), std::move(res.body())};
}

Result<ApiResult> api_request(const std::string& socket_path, std::string_view method,
                              std::string_view target, std::string_view body,
                              std::chrono::milliseconds timeout) {
  auto client = TRY(ApiClient::connect(socket_path, timeout));
  return client.request(method, target, body);
}

}  // namespace ringvm
