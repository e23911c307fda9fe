#include "cli/img/img_common.h"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "base/unique_fd.h"

namespace ringvm::img {

Result<uint64_t> parse_size(std::string_view s) {
  const std::string str(s);
  if (str.empty() || str[0] == '-' || str[0] == '+')
    return make_error(ErrorCode::kInvalidArgument, "invalid size '{}'", str);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(str.c_str(), &end);
  if (end == str.c_str() || errno != 0 || !(v >= 0))
    return make_error(ErrorCode::kInvalidArgument, "invalid size '{}' (use e.g. 8G, 512M, 64k)", str);
  std::string suffix(end);
  if (suffix == "B" || suffix == "b") suffix.clear();
  int shift = 0;
  if (!suffix.empty()) {
    if (suffix.size() == 2 && (suffix[1] == 'B' || suffix[1] == 'b' || suffix[1] == 'i')) suffix.resize(1);
    if (suffix.size() != 1)
      return make_error(ErrorCode::kInvalidArgument, "invalid size suffix in '{}' (k, M, G, T, P, E)", str);
    switch (suffix[0]) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      case 't': case 'T': shift = 40; break;
      case 'p': case 'P': shift = 50; break;
      case 'e': case 'E': shift = 60; break;
      default: return make_error(ErrorCode::kInvalidArgument, "invalid size suffix in '{}' (k, M, G, T, P, E)", str);
    }
  }
  const double bytes = std::ldexp(v, shift);
  if (bytes >= 9.2e18) return make_error(ErrorCode::kOutOfRange, "size '{}' is too large", str);
  if (shift == 0 && v != std::floor(v)) return make_error(ErrorCode::kInvalidArgument, "size '{}' is not whole bytes", str);
  return static_cast<uint64_t>(std::llround(bytes));
}

std::string human_size(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  // qemu-img prints three significant digits and drops trailing zeros.
  std::string s = fmt::format("{:.{}f}", v, v >= 100 ? 0 : v >= 10 ? 1 : 2);
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s + " " + kUnits[u];
}

Result<void> apply_create_options(std::string_view opts, Qcow2CreateOptions& o) {
  size_t pos = 0;
  while (pos <= opts.size()) {
    const size_t comma = std::min(opts.find(',', pos), opts.size());
    const std::string_view kv = opts.substr(pos, comma - pos);
    pos = comma + 1;
    if (kv.empty()) continue;
    const size_t eq = kv.find('=');
    const std::string key(kv.substr(0, eq));
    const std::string val(eq == std::string_view::npos ? "on" : kv.substr(eq + 1));
    auto on_off = [&](bool& out) -> Result<void> {
      if (val == "on" || val == "true") out = true;
      else if (val == "off" || val == "false") out = false;
      else return make_error(ErrorCode::kInvalidArgument, "option {}: expected on or off, got '{}'", key, val);
      return Ok();
    };
    if (key == "cluster_size") {
      const uint64_t v = TRY(parse_size(val));
      if (v > (2u << 20)) return make_error(ErrorCode::kInvalidArgument, "cluster_size {} larger than 2M", val);
      o.cluster_size = static_cast<uint32_t>(v);
    } else if (key == "compression_type") {
      if (val == "zlib") o.compression = qcow2::CompressionType::kZlib;
      else if (val == "zstd") o.compression = qcow2::CompressionType::kZstd;
      else return make_error(ErrorCode::kInvalidArgument, "compression_type '{}': use zlib or zstd", val);
    } else if (key == "preallocation") {
      if (val == "off") o.preallocation = Qcow2Preallocation::kOff;
      else if (val == "metadata") o.preallocation = Qcow2Preallocation::kMetadata;
      else if (val == "full" || val == "falloc") o.preallocation = Qcow2Preallocation::kFull;
      else return make_error(ErrorCode::kInvalidArgument, "preallocation '{}': use off, metadata or full", val);
    } else if (key == "lazy_refcounts") {
      RETURN_IF_ERROR(on_off(o.lazy_refcounts));
    } else if (key == "refcount_bits") {
      char* end = nullptr;
      const unsigned long v = std::strtoul(val.c_str(), &end, 10);
      if (*end || v == 0 || v > 64 || (v & (v - 1)))
        return make_error(ErrorCode::kInvalidArgument, "refcount_bits '{}': use 1, 2, 4, 8, 16, 32 or 64", val);
      o.refcount_bits = static_cast<uint32_t>(v);
    } else if (key == "compat") {
      if (val == "0.10" || val == "v2") o.version = 2;
      else if (val == "1.1" || val == "v3") o.version = 3;
      else return make_error(ErrorCode::kInvalidArgument, "compat '{}': use 0.10 or 1.1", val);
    } else if (key == "backing_file") {
      o.backing_file = val;
    } else if (key == "backing_fmt") {
      o.backing_format = val;
    } else {
      return make_error(ErrorCode::kInvalidArgument,
                        "unknown option '{}' (cluster_size, compression_type, preallocation, lazy_refcounts, "
                        "refcount_bits, compat, backing_file, backing_fmt)",
                        key);
    }
  }
  return Ok();
}

Result<std::string> resolve_format(const std::string& explicit_format, const std::string& path) {
  if (!explicit_format.empty()) {
    if (explicit_format != "raw" && explicit_format != "qcow2")
      return make_error(ErrorCode::kInvalidArgument, "unknown format '{}' (use raw or qcow2)", explicit_format);
    return explicit_format;
  }
  const auto dot = path.rfind('.');
  const std::string ext = dot == std::string::npos ? "" : path.substr(dot + 1);
  if (ext == "qcow2" || ext == "qcow") return std::string("qcow2");
  if (ext == "raw" || ext == "img" || ext == "bin") return std::string("raw");
  return make_error(ErrorCode::kInvalidArgument,
                    "{}: say which format it is with -f raw or -f qcow2 (ringvm never guesses from content)", path);
}

int fail(std::string_view verb, const Error& e) {
  std::fprintf(stderr, "ringvm img %.*s: %s\n", static_cast<int>(verb.size()), verb.data(), e.message().c_str());
  return 1;
}

Result<void> create_raw(const std::string& path, uint64_t size, Qcow2Preallocation prealloc) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return sys_error(fmt::format("create {}", path));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return sys_error(fmt::format("resize {}", path));
  if (prealloc == Qcow2Preallocation::kFull && size > 0 &&
      ::posix_fallocate(fd.get(), 0, static_cast<off_t>(size)) != 0)
    return make_error(ErrorCode::kIo, "{}: cannot preallocate {} bytes", path, size);
  if (::fsync(fd.get()) != 0) return sys_error(fmt::format("fsync {}", path));
  return Ok();
}

}  // namespace ringvm::img
