#pragma once
// `vlm-data inspect`: what a set of shards holds, and what in it is damaged.

#include <cstdint>
#include <string>
#include <vector>

namespace vlm {

struct InspectOptions {
  int64_t show = 3;     // samples printed
  bool decode = true;   // decode every image (finds corrupt ones; slower)
};

// Prints a report to stdout; returns the number of damaged items found.
int64_t inspect_shards(const std::vector<std::string>& paths, const InspectOptions& options);

}  // namespace vlm
