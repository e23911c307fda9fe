// Opening a virtual disk by explicit format. The format is never guessed from the file's content:
// probing lets a guest that writes a qcow2 header into a raw disk read host files through it.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"
#include "block/disk.h"

namespace ringvm {

struct DiskOpenOptions {
  bool read_only = true;
  int depth = 0;                       // position in a backing chain (0 = the image itself)
  bool open_backing = true;            // qcow2: open the backing chain
  std::string backing_format_override;  // qcow2: use this backing format instead of the recorded one
  uint64_t l2_cache_bytes = 4ull << 20;  // qcow2: L2 table cache size
  bool direct_io = false;                // raw: O_DIRECT (bypass the host page cache) where supported
};

// Opens `path` as `format` ("raw" or "qcow2"); kInvalidArgument names the formats for anything else.
Result<std::shared_ptr<Disk>> open_disk(const std::string& path, std::string_view format, bool read_only);
Result<std::shared_ptr<Disk>> open_disk(const std::string& path, std::string_view format,
                                        const DiskOpenOptions& opts);

}  // namespace ringvm
