#include "api/api_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "base/log.h"
#include "base/unique_fd.h"
#include "base/unix_address.h"

namespace ringvm {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Proto = asio::local::stream_protocol;
using Executor = asio::strand<asio::io_context::executor_type>;
using Socket = Proto::socket::rebind_executor<Executor>::other;
using Stream = beast::basic_stream<Proto, Executor>;

namespace {

// Largest request head (request line and headers) accepted.
constexpr uint32_t kMaxHeaderBytes = 8192;

}  // namespace

Result<int> bind_api_socket(const std::string& path) {
  const sockaddr_un addr = TRY(unix_address(path, "--api-sock"));
  // SAFETY: sockaddr_un is a sockaddr; the kernel reads sizeof addr bytes.
  const auto* sa = reinterpret_cast<const sockaddr*>(&addr);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(
          ErrorCode::kInvalidArgument,
          "--api-sock {}: the path exists and is not a socket; remove it or choose another path", path);
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return sys_error("socket(AF_UNIX)");
    if (::connect(probe.get(), sa, sizeof addr) == 0)
      return make_error(
          ErrorCode::kInvalidArgument,
          "--api-sock {}: another process is serving this socket (a ringvm already running?); stop it "
          "or choose another path",
          path);
    // Nobody listens: a stale socket from a process that ended. Replace it.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return sys_error(fmt::format("--api-sock {}: removing the stale socket", path));
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return sys_error("socket(AF_UNIX)");
  // Created 0600 (owner only): whoever can connect owns the VM. umask is process-wide; the
  // server starts before any other thread creates files.
  const mode_t old = ::umask(0177);
  const int bound = ::bind(fd.get(), sa, sizeof addr);
  const int bind_errno = errno;
  ::umask(old);
  if (bound != 0) return sys_error(fmt::format("--api-sock {}: bind", path), bind_errno);
  if (::chmod(path.c_str(), 0600) != 0) return sys_error(fmt::format("--api-sock {}: chmod 0600", path));
  if (::listen(fd.get(), 128) != 0) return sys_error(fmt::format("--api-sock {}: listen", path));
  return fd.release();
}

struct ApiServer::Impl {
  std::string path;
  ApiHandler& handler;
  // Before the io_context: sessions it still holds when destroyed count themselves out here.
  std::atomic<size_t> connections{0};
  std::atomic<bool> stopped{false};
  asio::io_context ioc{static_cast<int>(kThreads)};
  Proto::acceptor acceptor{ioc};
  std::vector<std::thread> threads;

  Impl(std::string p, ApiHandler& h) : path(std::move(p)), handler(h) {}
  void accept();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Socket socket, ApiServer::Impl& server) : stream_(std::move(socket)), server_(server) {
    server_.connections.fetch_add(1);
  }
  ~Session() { server_.connections.fetch_sub(1); }

  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(ApiHandler::kMaxBodyBytes);
    parser_->header_limit(kMaxHeaderBytes);
    stream_.expires_after(ApiServer::kReadTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset || ec == asio::error::eof)
      return close();
    if (ec == http::error::body_limit)
      return respond(
          413, fault_json(fmt::format("the request body is larger than {} bytes", ApiHandler::kMaxBodyBytes)),
          false);
    if (ec == http::error::header_limit)
      return respond(
          431, fault_json(fmt::format("the request head is larger than {} bytes", kMaxHeaderBytes)), false);
    if (ec) return respond(400, fault_json(fmt::format("malformed HTTP request: {}", ec.message())), false);
    const auto& req = parser_->get();
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view method(req.method_string().data(), req.method_string().size());
    stream_.expires_never();
    ApiResponse r = server_.handler.handle(method, target, req.body());
    respond(r.status, std::move(r.body), req.keep_alive());
  }

  void respond(int status, std::string body, bool keep_alive) {
    res_ = {};
    res_.version(11);
    res_.result(static_cast<unsigned>(status));
    res_.set(http::field::server, "ringvm");
    if (!body.empty()) res_.set(http::field::content_type, "application/json");
    res_.body() = std::move(body);
    res_.keep_alive(keep_alive);
    res_.prepare_payload();
    stream_.expires_after(ApiServer::kReadTimeout);  // a client that does not read its answer
    http::async_write(stream_, res_, [self = shared_from_this(), keep_alive](beast::error_code ec, size_t) {
      if (ec || !keep_alive) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(Proto::socket::shutdown_send, ignored);
    stream_.close();
  }

  Stream stream_;
  ApiServer::Impl& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
};

}  // namespace

void ApiServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, Socket socket) {
    if (ec == asio::error::operation_aborted || stopped.load()) return;
    if (ec) {
      // Out of file descriptors (EMFILE) and the like: wait a little rather than spin.
      RINGVM_LOG_RATELIMITED(warn, "API socket {}: accept: {}", path, ec.message());
      auto timer = std::make_shared<asio::steady_timer>(ioc, std::chrono::milliseconds(50));
      timer->async_wait([this, timer](beast::error_code) {
        if (!stopped.load()) accept();
      });
      return;
    } else if (connections.load() >= kMaxConnections) {
      RINGVM_LOG_RATELIMITED(warn, "API socket {}: {} connections open; refusing another", path,
                             kMaxConnections);
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      std::make_shared<Session>(std::move(socket), *this)->start();
    }
    accept();
  });
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<ApiServer>> ApiServer::start(const std::string& path, ApiHandler& handler) {
  UniqueFd fd(TRY(bind_api_socket(path)));
  auto impl = std::make_unique<Impl>(path, handler);
  beast::error_code ec;
  impl->acceptor.assign(Proto(), fd.get(), ec);
  if (ec) {
    ::unlink(path.c_str());
    return make_error(ErrorCode::kIo, "--api-sock {}: {}", path, ec.message());
  }
  (void)fd.release();  // the acceptor owns it now
  impl->accept();
  for (unsigned i = 0; i < kThreads; ++i)
    impl->threads.emplace_back([p = impl.get(), i] {
      ::pthread_setname_np(::pthread_self(), fmt::format("api-{}", i).c_str());
      p->ioc.run();
    });
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

ApiServer::~ApiServer() { stop(); }

const std::string& ApiServer::path() const { return impl_->path; }

void ApiServer::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  asio::post(impl_->ioc, [p = impl_.get()] {
    beast::error_code ignored;
    p->acceptor.close(ignored);
  });
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  ::unlink(impl_->path.c_str());
}

}  // namespace ringvm
