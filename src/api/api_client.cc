#include "api/api_client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace ringvm {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Proto = asio::local::stream_protocol;

namespace {

// The connected socket as Beast's SyncReadStream/SyncWriteStream: plain blocking send and recv,
// bounded by the SO_SNDTIMEO/SO_RCVTIMEO set at connect (no io_context round per request, no
// poll before each call: the fastest round trip).
class TimedStream {
 public:
  explicit TimedStream(int fd) : fd_(fd) {}

  template <class Buffers>
  size_t read_some(const Buffers& buffers, beast::error_code& ec) {
    return io(buffers, ec, [](int fd, msghdr* m) { return ::recvmsg(fd, m, 0); });
  }
  template <class Buffers>
  size_t write_some(const Buffers& buffers, beast::error_code& ec) {
    return io(buffers, ec, [](int fd, msghdr* m) { return ::sendmsg(fd, m, MSG_NOSIGNAL); });
  }
  template <class Buffers>
  size_t read_some(const Buffers& buffers) {
    beast::error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  template <class Buffers>
  size_t write_some(const Buffers& buffers) {
    beast::error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

 private:
  // One recvmsg/sendmsg over (up to 16 of) the buffers: a request's line, headers and body go
  // out in one system call.
  template <class Buffers, class Op>
  size_t io(const Buffers& buffers, beast::error_code& ec, Op op) {
    ec = {};
    std::array<iovec, 16> iov{};
    size_t n_iov = 0, total = 0;
    for (auto it = asio::buffer_sequence_begin(buffers);
         it != asio::buffer_sequence_end(buffers) && n_iov < iov.size(); ++it) {
      const auto b = asio::buffer(*it);
      if (b.size() == 0) continue;
      // SAFETY: sendmsg only reads these bytes; recvmsg gets mutable buffers from Beast.
      iov[n_iov++] = iovec{const_cast<void*>(b.data()), b.size()};
      total += b.size();
    }
    if (total == 0) return 0;
    msghdr m{};
    m.msg_iov = iov.data();
    m.msg_iovlen = n_iov;
    for (;;) {
      const ssize_t n = op(fd_, &m);
      if (n > 0) return static_cast<size_t>(n);
      if (n == 0) {
        ec = asio::error::eof;
        return 0;
      }
      if (errno == EINTR) continue;
      // SO_RCVTIMEO / SO_SNDTIMEO ran out (set at connect).
      ec = errno == EAGAIN ? beast::error_code(beast::error::timeout)
                           : beast::error_code(errno, boost::system::system_category());
      return 0;
    }
  }

  int fd_;
};

}  // namespace

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
  // Every send and receive waits at most `timeout`.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  const int fd = impl->stream.socket().native_handle();
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
    return sys_error(fmt::format("--api-sock {}: setting the timeout", socket_path));
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
  beast::error_code result;
  http::response<http::string_body> res;
  TimedStream stream(c.stream.socket().native_handle());
  http::write(stream, req, result);
  if (!result) http::read(stream, c.buffer, res, result);
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
