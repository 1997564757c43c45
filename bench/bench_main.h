#pragma once
// What every benchmark binary shares: MPI and glog set up, flags parsed, and
// any error reported with the rank before the whole job ends.

#include <glog/logging.h>

#include <cstdio>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"

namespace vlm {

// "--name value" pairs; flags not in `defaults` are an error listing the valid ones.
inline std::map<std::string, std::string> parse_bench_flags(int argc, char** argv,
                                                            std::map<std::string, std::string> defaults) {
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag.rfind("--", 0) != 0 || !defaults.count(flag.substr(2)) || i + 1 >= argc) {
      std::string valid;
      for (const auto& [name, value] : defaults) valid += " --" + name + " (" + value + ")";
      throw std::invalid_argument("bad flag '" + flag + "'; flags and defaults:" + valid);
    }
    defaults[flag.substr(2)] = argv[i + 1];
  }
  return defaults;
}

inline int bench_main(const char* name, int argc, char** argv, const std::function<int(int, char**)>& bench) {
  google::InitGoogleLogging(argv[0]);
  MpiRuntime mpi(&argc, &argv);
  try {
    return bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error on %s: %s\n", name, process_label().c_str(), e.what());
    MpiRuntime::abort_job(1);
  }
}

}  // namespace vlm
