// Helpers over iovec arrays: slicing a byte range, copying to and from flat buffers, zeroing.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace ringvm::qcow2 {

inline size_t iov_length(std::span<const iovec> iov) {
  size_t t = 0;
  for (const auto& v : iov) t += v.iov_len;
  return t;
}

// Appends to `out` the iovecs covering bytes [pos, pos + len) of `iov`.
inline void iov_slice(std::span<const iovec> iov, size_t pos, size_t len, std::vector<iovec>& out) {
  for (const auto& v : iov) {
    if (len == 0) break;
    if (pos >= v.iov_len) {
      pos -= v.iov_len;
      continue;
    }
    const size_t take = std::min(len, v.iov_len - pos);
    out.push_back({static_cast<uint8_t*>(v.iov_base) + pos, take});
    pos = 0;
    len -= take;
  }
}

inline void iov_to_buf(std::span<const iovec> iov, uint8_t* dst) {
  for (const auto& v : iov) {
    std::memcpy(dst, v.iov_base, v.iov_len);
    dst += v.iov_len;
  }
}

inline void buf_to_iov(const uint8_t* src, std::span<const iovec> iov) {
  for (const auto& v : iov) {
    std::memcpy(v.iov_base, src, v.iov_len);
    src += v.iov_len;
  }
}

inline void iov_zero(std::span<const iovec> iov) {
  for (const auto& v : iov) std::memset(v.iov_base, 0, v.iov_len);
}

}  // namespace ringvm::qcow2
