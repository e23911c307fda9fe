// `ringvm img info [-f fmt] [--output human|json] [--backing-chain] file`, and `snapshot -l`.
#include <sys/stat.h>

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "block/image_open.h"
#include "cli/img/img_common.h"

namespace ringvm::img {

namespace {

using Json = nlohmann::ordered_json;

struct InfoArgs {
  std::string format, output = "human", file;
  bool backing_chain = false;
};

uint64_t actual_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

Json snapshot_json(const Qcow2Snapshot& s) {
  Json j;
  j["icount"] = s.icount.value_or(0);
  j["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000;
  j["name"] = s.name;
  j["date-sec"] = s.date_sec;
  j["date-nsec"] = s.date_nsec;
  j["vm-clock-sec"] = s.vm_clock_nsec / 1000000000;
  j["id"] = s.id;
  j["vm-state-size"] = s.vm_state_size;
  return j;
}

std::string snapshot_table(const std::vector<Qcow2Snapshot>& snaps) {
  std::string out = "Snapshot list:\nID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n";
  for (const auto& s : snaps) {
    char date[32];
    const time_t t = s.date_sec;
    struct tm tm {};
    localtime_r(&t, &tm);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    const uint64_t secs = s.vm_clock_nsec / 1000000000;
    out += fmt::format("{:<9} {:<17} {:>7} {} {:02}:{:02}:{:02}.{:03} {:>10}\n", s.id, s.name,
                       human_size(s.vm_state_size), date, secs / 3600, secs / 60 % 60, secs % 60,
                       s.vm_clock_nsec / 1000000 % 1000, s.icount ? fmt::format("{}", *s.icount) : "--");
  }
  return out;
}

// Facts about one image, without opening its backing chain.
Result<Json> image_json(const std::string& path, const std::string& format) {
  Json j;
  if (format == "raw") {
    auto d = TRY(open_disk(path, "raw", true));
    j["virtual-size"] = d->size();
    j["filename"] = path;
    j["format"] = "raw";
    j["actual-size"] = actual_size(path);
    j["dirty-flag"] = false;
    return j;
  }
  Qcow2OpenOptions o;
  o.open_backing = false;
  auto img = TRY(Qcow2Image::open(path, o));
  const auto& h = img->header();
  j["virtual-size"] = img->size();
  j["filename"] = path;
  j["cluster-size"] = img->cluster_size();
  j["format"] = "qcow2";
  j["actual-size"] = actual_size(path);
  if (!img->snapshots().empty()) {
    Json snaps = Json::array();
    for (const auto& s : img->snapshots()) snaps.push_back(snapshot_json(s));
    j["snapshots"] = snaps;
  }
  Json data;
  data["compat"] = h.version == 2 ? "0.10" : "1.1";
  if (h.version >= 3) {
    data["compression-type"] = h.compression_type == qcow2::CompressionType::kZstd ? "zstd" : "zlib";
    data["lazy-refcounts"] = (h.compatible_features & qcow2::kCompatLazyRefcounts) != 0;
  } else {
    data["compression-type"] = "zlib";
  }
  data["refcount-bits"] = h.refcount_bits();
  if (h.version >= 3) {
    data["corrupt"] = (h.incompatible_features & qcow2::kIncompatCorrupt) != 0;
    data["extended-l2"] = false;
  }
  j["format-specific"] = Json{{"type", "qcow2"}, {"data", data}};
  if (!h.backing_file.empty()) {
    j["backing-filename"] = h.backing_file;
    j["full-backing-filename"] = img->full_backing_filename();
    if (!h.backing_format.empty()) j["backing-filename-format"] = h.backing_format;
  }
  j["dirty-flag"] = (h.incompatible_features & qcow2::kIncompatDirty) != 0;
  return j;
}

std::string human(const Json& j) {
  std::string out = fmt::format("image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n",
                                j["filename"].get<std::string>(), j["format"].get<std::string>(),
                                human_size(j["virtual-size"]), j["virtual-size"].get<uint64_t>(),
                                human_size(j["actual-size"]));
  if (j.contains("cluster-size")) out += fmt::format("cluster_size: {}\n", j["cluster-size"].get<uint64_t>());
  if (j.contains("backing-filename")) {
    out += "backing file: " + j["backing-filename"].get<std::string>();
    if (j["full-backing-filename"] != j["backing-filename"])
      out += " (actual path: " + j["full-backing-filename"].get<std::string>() + ")";
    out += "\n";
    if (j.contains("backing-filename-format"))
      out += "backing file format: " + j["backing-filename-format"].get<std::string>() + "\n";
  }
  if (j.contains("snapshots")) {
    std::vector<Qcow2Snapshot> snaps;  // re-render from JSON for one code path
    for (const auto& s : j["snapshots"]) {
      Qcow2Snapshot q;
      q.id = s["id"];
      q.name = s["name"];
      q.vm_state_size = s["vm-state-size"];
      q.date_sec = s["date-sec"];
      q.vm_clock_nsec = s["vm-clock-sec"].get<uint64_t>() * 1000000000 + s["vm-clock-nsec"].get<uint64_t>();
      q.icount = s["icount"].get<uint64_t>();
      snaps.push_back(q);
    }
    out += snapshot_table(snaps);
  }
  if (j.contains("format-specific")) {
    const auto& d = j["format-specific"]["data"];
    out += "Format specific information:\n";
    out += "    compat: " + d["compat"].get<std::string>() + "\n";
    out += "    compression type: " + d["compression-type"].get<std::string>() + "\n";
    if (d.contains("lazy-refcounts")) out += fmt::format("    lazy refcounts: {}\n", d["lazy-refcounts"].get<bool>());
    out += fmt::format("    refcount bits: {}\n", d["refcount-bits"].get<uint32_t>());
    if (d.contains("corrupt")) out += fmt::format("    corrupt: {}\n", d["corrupt"].get<bool>());
    if (d.contains("extended-l2")) out += fmt::format("    extended l2: {}\n", d["extended-l2"].get<bool>());
  }
  return out;
}

Result<void> run_info(const InfoArgs& a) {
  if (a.output != "human" && a.output != "json")
    return make_error(ErrorCode::kInvalidArgument, "--output must be human or json");
  std::string path = a.file;
  std::string format = TRY(resolve_format(a.format, path));
  Json chain = Json::array();
  for (int depth = 0;; ++depth) {
    auto j = image_json(path, format);
    if (!j.ok()) return wrap(std::move(j).error(), "{}", depth ? "backing file" : "image");
    chain.push_back(*j);
    if (!a.backing_chain || !j->contains("full-backing-filename")) break;
    if (depth >= qcow2::kMaxBackingDepth)
      return make_error(ErrorCode::kInvalidArgument, "{}: backing chain deeper than 16 (a loop?)", a.file);
    if (!j->contains("backing-filename-format"))
      return make_error(ErrorCode::kInvalidArgument, "{}: backing file has no recorded format", path);
    path = (*j)["full-backing-filename"];
    format = (*j)["backing-filename-format"];
  }
  if (a.output == "json") {
    std::printf("%s\n", (a.backing_chain ? chain : chain[0]).dump(4).c_str());
  } else {
    for (size_t i = 0; i < chain.size(); ++i) std::printf("%s%s", i ? "\n" : "", human(chain[i]).c_str());
  }
  return Ok();
}

}  // namespace

void add_info(CLI::App& img, int* status) {
  auto a = std::make_shared<InfoArgs>();
  auto* c = img.add_subcommand("info", "Show an image's format, sizes, backing file and qcow2 features");
  c->add_option("-f", a->format, "Image format: raw or qcow2 (default: from the file name)");
  c->add_option("--output", a->output, "human (default) or json (the field names of qemu-img's JSON)");
  c->add_flag("--backing-chain", a->backing_chain, "Also show every image of the backing chain");
  c->add_option("file", a->file, "The image")->required();
  c->callback([a, status] {
    auto r = run_info(*a);
    *status = r.ok() ? 0 : fail("info", r.error());
  });
}

void add_snapshot(CLI::App& img, int* status) {
  auto file = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>();
  auto list = std::make_shared<bool>(false);
  auto* c = img.add_subcommand("snapshot", "List a qcow2 image's internal snapshots (-l)");
  c->add_flag("-l", *list, "List the snapshots")->required();
  c->add_option("-f", *format, "Image format (qcow2)");
  c->add_option("file", *file, "The image")->required();
  c->callback([=] {
    auto fmt = resolve_format(*format, *file);
    if (!fmt.ok()) {
      *status = fail("snapshot", fmt.error());
      return;
    }
    if (*fmt != "qcow2") {
      *status = fail("snapshot", make_error(ErrorCode::kUnsupported, "{}: raw images have no snapshots", *file));
      return;
    }
    Qcow2OpenOptions o;
    o.open_backing = false;
    auto r = Qcow2Image::open(*file, o);
    if (!r.ok()) {
      *status = fail("snapshot", r.error());
      return;
    }
    if (!(*r)->snapshots().empty()) std::fputs(snapshot_table((*r)->snapshots()).c_str(), stdout);
    *status = 0;
  });
}

}  // namespace ringvm::img
