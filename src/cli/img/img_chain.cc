// `ringvm img resize`, `map`, `commit` and `rebase`: the verbs that look at or change an image's
// size and its place in a backing chain.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "block/image_open.h"
#include "block/raw_disk.h"
#include "cli/img/img_common.h"

namespace ringvm::img {

namespace {

Result<void> run_resize(const std::string& format, const std::string& file, const std::string& size_arg,
                        bool shrink) {
  const std::string fmt = TRY(resolve_format(format, file));
  auto disk = TRY(open_disk(file, fmt, false));
  const uint64_t cur = disk->size();
  uint64_t target = 0;
  if (!size_arg.empty() && (size_arg[0] == '+' || size_arg[0] == '-')) {
    const uint64_t delta = TRY(parse_size(size_arg.substr(1)));
    if (size_arg[0] == '-' && delta > cur)
      return make_error(ErrorCode::kInvalidArgument, "{}: cannot shrink below zero", file);
    target = size_arg[0] == '+' ? cur + delta : cur - delta;
  } else {
    target = TRY(parse_size(size_arg));
  }
  if (target < cur && !shrink)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: shrinking from {} to {} bytes loses data; add --shrink if that is what you want", file,
                      cur, target);
  if (auto* q = dynamic_cast<Qcow2Image*>(disk.get())) {
    RETURN_IF_ERROR(q->resize(target));
    RETURN_IF_ERROR(q->close());
  } else {
    disk.reset();
    if (::truncate(file.c_str(), static_cast<off_t>(target)) != 0)
      return sys_error(fmt::format("resize {}", file));
  }
  std::printf("Image resized.\n");
  return Ok();
}

struct MapEntry {
  uint64_t start = 0, length = 0;
  int depth = 0;
  bool present = false, zero = false, data = false;
  std::optional<uint64_t> offset;
  std::string file;
};

// The state of `d` at `pos`, following unallocated clusters down the backing chain.
Result<MapEntry> status_at(Disk& d, int depth, uint64_t pos, uint64_t max) {
  MapEntry e;
  e.start = pos;
  e.depth = depth;
  e.file = d.path();
  if (pos >= d.size()) {
    e.length = max;
    e.zero = true;
    return e;
  }
  max = std::min(max, d.size() - pos);
  if (auto* q = dynamic_cast<Qcow2Image*>(&d)) {
    auto x = TRY(q->block_status(pos, max));
    e.length = x.length;
    switch (x.kind) {
      case Qcow2ClusterKind::kData: e.present = e.data = true; e.offset = x.host_offset; break;
      case Qcow2ClusterKind::kCompressed: e.present = e.data = true; break;
      case Qcow2ClusterKind::kZero: e.present = e.zero = true; break;
      case Qcow2ClusterKind::kUnallocated:
        if (q->backing()) {
          auto b = TRY(status_at(*q->backing(), depth + 1, pos, x.length));
          b.start = pos;
          return b;
        }
        e.zero = true;
        break;
    }
    return e;
  }
  // Raw: data or hole, by the filesystem's map.
  e.present = true;
  e.length = max;
  if (auto fd = d.direct_fd()) {
    const off_t data = ::lseek(*fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0 || static_cast<uint64_t>(data) > pos) {
      e.zero = true;
      if (data >= 0) e.length = std::min<uint64_t>(max, static_cast<uint64_t>(data) - pos);
      return e;
    }
    const off_t hole = ::lseek(*fd, static_cast<off_t>(pos), SEEK_HOLE);
    if (hole > 0) e.length = std::min<uint64_t>(max, static_cast<uint64_t>(hole) - pos);
  }
  e.data = true;
  e.offset = pos;
  return e;
}

Result<void> run_map(const std::string& format, const std::string& file, const std::string& output) {
  if (output != "human" && output != "json")
    return make_error(ErrorCode::kInvalidArgument, "--output must be human or json");
  const std::string fmt = TRY(resolve_format(format, file));
  auto disk = TRY(open_disk(file, fmt, true));
  std::vector<MapEntry> entries;
  for (uint64_t pos = 0; pos < disk->size();) {
    MapEntry e = TRY(status_at(*disk, 0, pos, std::min<uint64_t>(disk->size() - pos, 1ull << 30)));
    if (!entries.empty()) {
      MapEntry& p = entries.back();
      const bool offsets_continue = p.offset.has_value() == e.offset.has_value() &&
                                    (!p.offset || *p.offset + p.length == *e.offset);
      if (p.depth == e.depth && p.present == e.present && p.zero == e.zero && p.data == e.data &&
          p.file == e.file && offsets_continue) {
        p.length += e.length;
        pos += e.length;
        continue;
      }
    }
    pos += e.length;
    entries.push_back(std::move(e));
  }
  if (output == "json") {
    std::printf("[");
    for (size_t i = 0; i < entries.size(); ++i) {
      const auto& e = entries[i];
      nlohmann::ordered_json j{{"start", e.start}, {"length", e.length}, {"depth", e.depth},
                               {"present", e.present}, {"zero", e.zero}, {"data", e.data}};
      if (e.offset) j["offset"] = *e.offset;
      std::printf("%s%s", i ? ",\n" : "", j.dump().c_str());
    }
    std::printf("]\n");
  } else {
    std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    for (const auto& e : entries)
      if (e.data && e.offset)
        std::printf("%-16s%-16s%-16s%s\n", fmt::format("{:#x}", e.start).c_str(), fmt::format("{:#x}", e.length).c_str(),
                    fmt::format("{:#x}", *e.offset).c_str(), e.file.c_str());
  }
  return Ok();
}

Result<void> copy_range(Disk& from, Disk& to, uint64_t off, uint64_t len, std::vector<uint8_t>& buf) {
  while (len > 0) {
    const uint64_t n = std::min<uint64_t>(len, buf.size());
    iovec v{buf.data(), n};
    RETURN_IF_ERROR(from.readv(off, {&v, 1}));
    RETURN_IF_ERROR(to.writev(off, {&v, 1}));
    off += n;
    len -= n;
  }
  return Ok();
}

Result<void> run_commit(const std::string& format, const std::string& file) {
  const std::string fmt = TRY(resolve_format(format, file));
  if (fmt != "qcow2") return make_error(ErrorCode::kInvalidArgument, "{}: only qcow2 images have a backing file", file);
  // The top image alone (its clusters) and its backing file, writable.
  Qcow2OpenOptions o;
  o.read_only = false;
  o.open_backing = false;
  auto top = TRY(Qcow2Image::open(file, o));
  if (top->header().backing_file.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: image has no backing file to commit into", file);
  if (top->header().backing_format.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: backing file has no recorded format; run rebase -u -F first", file);
  DiskOpenOptions bo;
  bo.read_only = false;
  auto base = TRY(open_disk(top->full_backing_filename(), top->header().backing_format, bo));
  if (base->size() < top->size())
    return make_error(ErrorCode::kUnsupported, "{}: backing file is smaller than the image; resize it first",
                      base->path());
  std::vector<uint8_t> buf(2u << 20);
  for (uint64_t pos = 0; pos < top->size();) {
    auto e = TRY(top->block_status(pos, top->size() - pos));
    if (e.kind == Qcow2ClusterKind::kData || e.kind == Qcow2ClusterKind::kCompressed)
      RETURN_IF_ERROR(copy_range(*top, *base, pos, e.length, buf));
    else if (e.kind == Qcow2ClusterKind::kZero)
      RETURN_IF_ERROR(base->write_zeroes(pos, e.length, false));
    pos += e.length;
  }
  RETURN_IF_ERROR(base->flush());
  // Empty the top image: with its backing file not open, discard leaves clusters unallocated.
  RETURN_IF_ERROR(top->discard(0, top->size()));
  RETURN_IF_ERROR(top->close());
  std::printf("Image committed.\n");
  return Ok();
}

Result<void> run_rebase(const std::string& format, const std::string& file, const std::string& backing,
                        const std::string& backing_format, bool unsafe) {
  const std::string fmt = TRY(resolve_format(format, file));
  if (fmt != "qcow2") return make_error(ErrorCode::kInvalidArgument, "{}: only qcow2 images have a backing file", file);
  if (!backing.empty() && backing_format.empty())
    return make_error(ErrorCode::kInvalidArgument, "new backing file '{}' needs its format: add -F raw or -F qcow2",
                      backing);
  Qcow2OpenOptions o;
  o.read_only = false;
  o.open_backing = !unsafe;
  auto top = TRY(Qcow2Image::open(file, o));
  if (!unsafe) {
    // Every cluster the image does not hold itself must read the same through the new backing file.
    std::shared_ptr<Disk> nb;
    if (!backing.empty()) {
      const auto slash = file.rfind('/');
      const std::string full = backing.front() == '/' || slash == std::string::npos ? backing
                                                                                    : file.substr(0, slash + 1) + backing;
      auto r = open_disk(full, backing_format, true);
      if (!r.ok()) return wrap(std::move(r).error(), "new backing file");
      nb = std::move(*r);
    }
    const uint64_t cs = top->cluster_size();
    std::vector<uint8_t> old_data(cs), new_data(cs);
    for (uint64_t pos = 0; pos < top->size();) {
      auto e = TRY(top->block_status(pos, top->size() - pos));
      if (e.kind != Qcow2ClusterKind::kUnallocated) {
        pos += e.length;
        continue;
      }
      for (uint64_t c = pos; c < pos + e.length; c += cs) {
        const uint64_t n = std::min<uint64_t>(cs, top->size() - c);
        iovec ov{old_data.data(), n};
        RETURN_IF_ERROR(top->readv(c, {&ov, 1}));
        std::fill(new_data.begin(), new_data.end(), 0);
        if (nb && c < nb->size()) {
          iovec nv{new_data.data(), std::min<uint64_t>(n, nb->size() - c)};
          RETURN_IF_ERROR(nb->readv(c, {&nv, 1}));
        }
        if (std::memcmp(old_data.data(), new_data.data(), n) != 0) RETURN_IF_ERROR(top->writev(c, {&ov, 1}));
      }
      pos += e.length;
    }
  }
  RETURN_IF_ERROR(top->set_backing(backing, backing_format));
  return top->close();
}

}  // namespace

void add_resize(CLI::App& img, int* status) {
  auto format = std::make_shared<std::string>(), file = std::make_shared<std::string>(),
       size = std::make_shared<std::string>();
  auto shrink = std::make_shared<bool>(false);
  auto* c = img.add_subcommand("resize", "Change an image's virtual size (SIZE, +SIZE or -SIZE; shrinking needs --shrink)");
  c->add_option("-f", *format, "Image format: raw or qcow2");
  c->add_flag("--shrink", *shrink, "Allow shrinking (data past the new end is lost)");
  c->add_option("file", *file, "The image")->required();
  c->add_option("size", *size, "New size, or +SIZE / -SIZE relative to the current one (use -- before -SIZE)")
      ->required();
  c->callback([=] {
    auto r = run_resize(*format, *file, *size, *shrink);
    *status = r.ok() ? 0 : fail("resize", r.error());
  });
}

void add_map(CLI::App& img, int* status) {
  auto format = std::make_shared<std::string>(), file = std::make_shared<std::string>(),
       output = std::make_shared<std::string>("human");
  auto* c = img.add_subcommand("map", "Show where each range of the image's data lives (like qemu-img map)");
  c->add_option("-f", *format, "Image format: raw or qcow2");
  c->add_option("--output", *output, "human (default) or json: start, length, depth, present, zero, data, offset");
  c->add_option("file", *file, "The image")->required();
  c->callback([=] {
    auto r = run_map(*format, *file, *output);
    *status = r.ok() ? 0 : fail("map", r.error());
  });
}

void add_commit(CLI::App& img, int* status) {
  auto format = std::make_shared<std::string>(), file = std::make_shared<std::string>();
  auto* c = img.add_subcommand("commit", "Write a qcow2 image's clusters into its backing file, then empty it");
  c->add_option("-f", *format, "Image format (qcow2)");
  c->add_option("file", *file, "The image")->required();
  c->callback([=] {
    auto r = run_commit(*format, *file);
    *status = r.ok() ? 0 : fail("commit", r.error());
  });
}

void add_rebase(CLI::App& img, int* status) {
  auto format = std::make_shared<std::string>(), file = std::make_shared<std::string>(),
       backing = std::make_shared<std::string>(), bfmt = std::make_shared<std::string>();
  auto unsafe = std::make_shared<bool>(false);
  auto* c = img.add_subcommand("rebase", "Change a qcow2 image's backing file (safe: copies clusters that differ)");
  c->add_option("-f", *format, "Image format (qcow2)");
  c->add_option("-b", *backing, "New backing file (\"\" for none)")->required();
  c->add_option("-F", *bfmt, "Format of the new backing file: raw or qcow2");
  c->add_flag("-u", *unsafe, "Unsafe: only rewrite the header (the new backing file must hold the same data)");
  c->add_option("file", *file, "The image")->required();
  c->callback([=] {
    auto r = run_rebase(*format, *file, *backing, *bfmt, *unsafe);
    *status = r.ok() ? 0 : fail("rebase", r.error());
  });
}

}  // namespace ringvm::img
