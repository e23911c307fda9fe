#include "block/image_open.h"

#include "block/qcow2/qcow2_image.h"
#include "block/raw_disk.h"

namespace ringvm {

Result<std::shared_ptr<Disk>> open_disk(const std::string& path, std::string_view format, bool read_only) {
  DiskOpenOptions opts;
  opts.read_only = read_only;
  return open_disk(path, format, opts);
}

Result<std::shared_ptr<Disk>> open_disk(const std::string& path, std::string_view format,
                                        const DiskOpenOptions& opts) {
  if (format == "raw") {
    auto d = TRY(RawDisk::open(path, opts.read_only, opts.direct_io));
    return std::shared_ptr<Disk>(std::move(d));
  }
  if (format == "qcow2") {
    Qcow2OpenOptions q;
    q.read_only = opts.read_only;
    q.depth = opts.depth;
    q.open_backing = opts.open_backing;
    q.backing_format_override = opts.backing_format_override;
    q.l2_cache_bytes = opts.l2_cache_bytes;
    auto d = TRY(Qcow2Image::open(path, q));
    return std::shared_ptr<Disk>(std::move(d));
  }
  return make_error(ErrorCode::kInvalidArgument, "{}: unknown disk format '{}' (use raw or qcow2)", path, format);
}

}  // namespace ringvm
