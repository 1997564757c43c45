#pragma once
// What every benchmark binary shares: MPI and glog set up, flags parsed, and
// any error reported with the rank before the whole job ends.

#include <glog/logging.h>

#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/host_allocator.h"
#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"

namespace vlm {

// --help or -h: the flags and their defaults, printed by bench_main.
struct BenchHelp : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "--name value" pairs; flags not in `defaults` are an error listing the valid ones.
inline std::map<std::string, std::string> parse_bench_flags(int argc, char** argv,
                                                            std::map<std::string, std::string> defaults) {
  std::string valid;
  for (const auto& [name, value] : defaults) valid += "\n  --" + name + " (default: " + value + ")";
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") throw BenchHelp(valid);
    if (flag.rfind("--", 0) != 0 || !defaults.count(flag.substr(2)) || i + 1 >= argc) {
      throw std::invalid_argument("bad flag '" + flag + "'; flags and defaults:" + valid);
    }
    defaults[flag.substr(2)] = argv[i + 1];
  }
  return defaults;
}

// "--set a=1,b=2": the config overrides of a benchmark, as vlm-train's --set takes them one by one.
inline std::vector<std::string> config_overrides(const std::string& list, std::vector<std::string> overrides = {}) {
  std::string item;
  for (std::istringstream in(list); std::getline(in, item, ',');) {
    if (!item.empty()) overrides.push_back(item);
  }
  return overrides;
}

// "fp32" or "bf16" as the config override device.precision=FP32 or BF16.
inline std::string precision_override(const std::string& precision) {
  if (precision != "fp32" && precision != "bf16") {
    throw std::invalid_argument("--precision: fp32 or bf16 (a list of them for vlm-train-bench), not '" + precision +
                                "'");
  }
  return precision == "bf16" ? "device.precision=BF16" : "device.precision=FP32";
}

inline int bench_main(const char* name, int argc, char** argv, const std::function<int(int, char**)>& bench) {
  keep_freed_memory_for_reuse();  // Note [Host allocator]
  google::InitGoogleLogging(argv[0]);
  MpiRuntime mpi(&argc, &argv);
  try {
    return bench(argc, argv);
  } catch (const BenchHelp& flags) {
    if (mpi.rank() == 0) std::printf("usage: %s [--FLAG VALUE ...] (docs/performance.md)\nflags:%s\n", name, flags.what());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error on %s: %s\n", name, process_label().c_str(), e.what());
    MpiRuntime::abort_job(1);
  }
}

}  // namespace vlm
