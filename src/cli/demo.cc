#include "cli/demo.h"

#include <sys/utsname.h>

#include <algorithm>
#include <filesystem>
#include <vector>

extern "C" const uint8_t ringvm_demo_initramfs_start[];
extern "C" const uint8_t ringvm_demo_initramfs_end[];

namespace ringvm {

std::span<const uint8_t> demo_initramfs() {
  return {ringvm_demo_initramfs_start,
          static_cast<size_t>(ringvm_demo_initramfs_end - ringvm_demo_initramfs_start)};
}

Result<std::string> find_host_kernel(const std::string& boot_dir) {
  namespace fs = std::filesystem;
  utsname u{};
  if (::uname(&u) == 0) {
    fs::path own = fs::path(boot_dir) / (std::string("vmlinuz-") + u.release);
    std::error_code ec;
    if (fs::is_regular_file(own, ec)) return own.string();
  }
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(boot_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("vmlinuz-") && e.is_regular_file(ec)) found.push_back(e.path().string());
  }
  if (found.empty())
    return make_error(ErrorCode::kNotFound,
                      "no kernel in {} for the demo: install one (apt-get install linux-image-amd64) or pass --kernel",
                      boot_dir);
  // Newest by version-aware order: "vmlinuz-6.10" sorts after "vmlinuz-6.9".
  std::sort(found.begin(), found.end(), [](const std::string& a, const std::string& b) {
    return ::strverscmp(a.c_str(), b.c_str()) < 0;
  });
  return found.back();
}

}  // namespace ringvm
