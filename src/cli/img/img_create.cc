// `ringvm img create [-f fmt] [-b backing -F fmt] [-o opts] file [size]`
#include <cstdio>

#include "block/image_open.h"
#include "cli/img/img_common.h"

namespace ringvm::img {

namespace {

struct CreateArgs {
  std::string format, backing, backing_format, size;
  std::vector<std::string> opts;
  std::string file;
  bool quiet = false;
};

std::string join_dir(const std::string& image, const std::string& rel) {
  if (rel.empty() || rel.front() == '/') return rel;
  const auto slash = image.rfind('/');
  return slash == std::string::npos ? rel : image.substr(0, slash + 1) + rel;
}

Result<void> run_create(const CreateArgs& a) {
  const std::string fmt = TRY(resolve_format(a.format, a.file));
  Qcow2CreateOptions o;
  for (const auto& s : a.opts) RETURN_IF_ERROR(apply_create_options(s, o));
  if (!a.backing.empty()) o.backing_file = a.backing;
  if (!a.backing_format.empty()) o.backing_format = a.backing_format;
  if (!o.backing_file.empty() && o.backing_format.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "backing file '{}' needs its format: add -F raw or -F qcow2", o.backing_file);
  if (!a.size.empty()) {
    o.size = TRY(parse_size(a.size));
  } else if (!o.backing_file.empty()) {
    auto b = open_disk(join_dir(a.file, o.backing_file), o.backing_format, true);
    if (!b.ok()) return wrap(std::move(b).error(), "backing file");
    o.size = (*b)->size();
  } else {
    return make_error(ErrorCode::kInvalidArgument, "{}: give the image size (e.g. 8G)", a.file);
  }
  if (!a.quiet) {
    std::printf("Formatting '%s', fmt=%s", a.file.c_str(), fmt.c_str());
    if (fmt == "qcow2") std::printf(" cluster_size=%u", o.cluster_size);
    std::printf(" size=%llu", static_cast<unsigned long long>(o.size));
    if (!o.backing_file.empty())
      std::printf(" backing_file=%s backing_fmt=%s", o.backing_file.c_str(), o.backing_format.c_str());
    std::printf("\n");
  }
  if (fmt == "raw") {
    if (!o.backing_file.empty())
      return make_error(ErrorCode::kInvalidArgument, "raw images cannot have a backing file");
    return create_raw(a.file, o.size, o.preallocation);
  }
  return Qcow2Image::create(a.file, o);
}

}  // namespace

void add_create(CLI::App& img, int* status) {
  auto a = std::make_shared<CreateArgs>();
  auto* c = img.add_subcommand("create", "Create a raw or qcow2 image");
  c->add_option("-f", a->format, "Image format: raw or qcow2 (default: from the file name)");
  c->add_option("-b", a->backing, "Backing file (qcow2 only); relative paths are relative to the image");
  c->add_option("-F", a->backing_format, "Format of the backing file: raw or qcow2");
  c->add_option("-o", a->opts,
                "Options: cluster_size=64k, compression_type=zlib|zstd, preallocation=off|metadata|full, "
                "lazy_refcounts=on|off, refcount_bits=16, compat=1.1|0.10")->allow_extra_args(false);
  c->add_flag("-q", a->quiet, "Quiet");
  c->add_option("file", a->file, "The image to create")->required();
  c->add_option("size", a->size, "Virtual size: bytes or with k, M, G, T suffix (default: the backing file's)");
  c->callback([a, status] {
    auto r = run_create(*a);
    *status = r.ok() ? 0 : fail("create", r.error());
  });
}

}  // namespace ringvm::img
