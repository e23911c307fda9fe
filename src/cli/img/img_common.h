// Shared pieces of `ringvm img`: size and -o parsing, format resolution, error printing, and the
// registration function of each verb.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"
#include "block/qcow2/qcow2_image.h"

namespace ringvm::img {

// "8G", "512M", "1.5T", "4096" (bytes), "64k": binary multiples, as qemu-img reads them.
Result<uint64_t> parse_size(std::string_view s);
// "1 GiB", "196 KiB": qemu-img's human sizes.
std::string human_size(uint64_t bytes);

// Applies "-o key=value,key=value" to create options (cluster_size, compression_type,
// preallocation, lazy_refcounts, refcount_bits, compat, backing_file, backing_fmt).
Result<void> apply_create_options(std::string_view opts, Qcow2CreateOptions& o);

// The format to use for `path`: the explicit one if given, else from the file name's extension
// (.qcow2/.qcow -> qcow2, .raw/.img/.bin -> raw). Never from the file's content.
Result<std::string> resolve_format(const std::string& explicit_format, const std::string& path);

// Prints "ringvm img <verb>: <message>" to stderr and returns exit status 1.
int fail(std::string_view verb, const Error& e);

// Creates a raw file of `size` bytes (sparse) or, with preallocation=full, allocated.
Result<void> create_raw(const std::string& path, uint64_t size, Qcow2Preallocation prealloc);

void add_create(CLI::App& img, int* status);
void add_info(CLI::App& img, int* status);
void add_check(CLI::App& img, int* status);
void add_convert(CLI::App& img, int* status);
void add_resize(CLI::App& img, int* status);
void add_map(CLI::App& img, int* status);
void add_commit(CLI::App& img, int* status);
void add_rebase(CLI::App& img, int* status);
void add_snapshot(CLI::App& img, int* status);

}  // namespace ringvm::img
