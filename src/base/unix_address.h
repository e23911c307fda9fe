// The sockaddr_un for a Unix socket path, checked against sun_path's size (the one place it is
// built: the vsock backend's sockets, the API socket).
#pragma once

#include <sys/un.h>

#include <cstring>
#include <string>
#include <string_view>

#include "base/result.h"

namespace ringvm {

// `what` names the path in the error ("--api-sock", "vsock socket").
inline Result<sockaddr_un> unix_address(const std::string& path, std::string_view what) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return make_error(ErrorCode::kInvalidArgument, "{} '{}': a socket path must be 1 to {} bytes", what, path,
                      sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace ringvm
