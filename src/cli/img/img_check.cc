// `ringvm img check [-f fmt] [-r leaks|all] [--output human|json] file`
// Exit status as qemu-img's: 0 clean, 1 check not completed, 2 corruptions, 3 leaks only,
// 63 the format cannot be checked (raw).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/img/img_common.h"

namespace ringvm::img {

namespace {

struct CheckArgs {
  std::string format, repair, output = "human", file;
};

int exit_for(const Qcow2CheckResult& r) {
  if (r.check_errors) return 1;
  if (r.corruptions) return 2;
  if (r.leaks) return 3;
  return 0;
}

void print_human(const Qcow2CheckResult& r) {
  for (const auto& m : r.messages) std::fprintf(stderr, "%s\n", m.c_str());
  if (r.corruptions)
    std::printf("\n%llu errors were found on the image.\nData may be corrupted, or further writes to the image may "
                "corrupt it.\n", static_cast<unsigned long long>(r.corruptions));
  if (r.leaks)
    std::printf("\n%llu leaked clusters were found on the image.\nThis means waste of disk space, but no harm to "
                "data.\n", static_cast<unsigned long long>(r.leaks));
  if (r.check_errors)
    std::printf("\n%llu internal errors have occurred during the check.\n",
                static_cast<unsigned long long>(r.check_errors));
  if (!r.corruptions && !r.leaks && !r.check_errors) std::printf("No errors were found on the image.\n");
  if (r.total_clusters) {
    const double t = static_cast<double>(r.total_clusters);
    std::printf("%llu/%llu = %.2f%% allocated, %.2f%% fragmented, %.2f%% compressed clusters\n",
                static_cast<unsigned long long>(r.allocated_clusters), static_cast<unsigned long long>(r.total_clusters),
                100.0 * static_cast<double>(r.allocated_clusters) / t,
                r.allocated_clusters ? 100.0 * static_cast<double>(r.fragmented_clusters) / static_cast<double>(r.allocated_clusters) : 0.0,
                r.allocated_clusters ? 100.0 * static_cast<double>(r.compressed_clusters) / static_cast<double>(r.allocated_clusters) : 0.0);
  }
  std::printf("Image end offset: %llu\n", static_cast<unsigned long long>(r.image_end_offset));
}

int run_check(const CheckArgs& a) {
  auto fmt = resolve_format(a.format, a.file);
  if (!fmt.ok()) return fail("check", fmt.error());
  if (*fmt == "raw") {
    std::fprintf(stderr, "ringvm img check: %s: raw images have no metadata to check\n", a.file.c_str());
    return 63;
  }
  if (a.output != "human" && a.output != "json")
    return fail("check", make_error(ErrorCode::kInvalidArgument, "--output must be human or json"));
  Qcow2Repair repair = Qcow2Repair::kNone;
  if (a.repair == "leaks") repair = Qcow2Repair::kLeaks;
  else if (a.repair == "all") repair = Qcow2Repair::kAll;
  else if (!a.repair.empty())
    return fail("check", make_error(ErrorCode::kInvalidArgument, "-r must be leaks or all, not '{}'", a.repair));
  Qcow2OpenOptions o;
  o.open_backing = false;
  o.read_only = repair == Qcow2Repair::kNone;
  o.allow_corrupt = true;
  auto img = Qcow2Image::open(a.file, o);
  if (!img.ok()) return fail("check", img.error());
  auto r = (*img)->check(repair);
  if (!r.ok()) return fail("check", r.error());
  Qcow2CheckResult final = *r;
  if (repair != Qcow2Repair::kNone && (r->leaks || r->corruptions)) {
    if (a.output == "human") {
      for (const auto& m : r->messages) std::fprintf(stderr, "%s\n", m.c_str());
      std::printf("The following inconsistencies were found and repaired:\n\n    %llu leaked clusters\n    %llu "
                  "corruptions\n\nDouble checking the fixed image now...\n",
                  static_cast<unsigned long long>(r->leaks_fixed), static_cast<unsigned long long>(r->corruptions_fixed));
    }
    auto again = (*img)->check(Qcow2Repair::kNone);
    if (!again.ok()) return fail("check", again.error());
    final = *again;
    final.leaks_fixed = r->leaks_fixed;
    final.corruptions_fixed = r->corruptions_fixed;
  }
  auto closed = (*img)->close();
  if (!closed.ok()) return fail("check", closed.error());
  if (a.output == "json") {
    nlohmann::ordered_json j;
    j["image-end-offset"] = final.image_end_offset;
    j["total-clusters"] = final.total_clusters;
    j["check-errors"] = final.check_errors;
    j["leaks"] = final.leaks;
    j["corruptions"] = final.corruptions;
    j["leaks-fixed"] = final.leaks_fixed;
    j["corruptions-fixed"] = final.corruptions_fixed;
    j["filename"] = a.file;
    j["format"] = "qcow2";
    j["allocated-clusters"] = final.allocated_clusters;
    j["fragmented-clusters"] = final.fragmented_clusters;
    j["compressed-clusters"] = final.compressed_clusters;
    std::printf("%s\n", j.dump(4).c_str());
  } else {
    if (repair == Qcow2Repair::kNone) print_human(final);
    else {
      Qcow2CheckResult quiet = final;
      quiet.messages.clear();
      print_human(quiet);
    }
  }
  return exit_for(final);
}

}  // namespace

void add_check(CLI::App& img, int* status) {
  auto a = std::make_shared<CheckArgs>();
  auto* c = img.add_subcommand("check", "Check a qcow2 image's metadata for leaks and corruptions; -r repairs");
  c->add_option("-f", a->format, "Image format (qcow2)");
  c->add_option("-r", a->repair, "Repair: leaks (free leaked clusters) or all (also fix corruptions)");
  c->add_option("--output", a->output, "human (default) or json");
  c->add_option("file", a->file, "The image")->required();
  c->footer("Exit status: 0 clean, 1 check not completed, 2 corruptions, 3 leaked clusters only, 63 raw image.");
  c->callback([a, status] { *status = run_check(*a); });
}

}  // namespace ringvm::img
