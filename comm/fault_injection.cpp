#include "comm/fault_injection.h"

#include <mpi.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <thread>
#include <vector>

namespace vlm {
namespace {

struct Fault {
  std::string kind, point;
  int rank = -1;
  int64_t step = 0;
  int64_t last_step = std::numeric_limits<int64_t>::max();  // nan: the last step that is NaN
};

Fault parse_fault() {
  Fault fault;
  const char* text = std::getenv("VLM_FAULT");
  if (text == nullptr) return fault;
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ':');) parts.push_back(part);
  if (parts.size() >= 3 && parts[0] == "stop") {
    fault = {"stop", parts[1], std::stoi(parts[2]), parts.size() > 3 ? std::stoll(parts[3]) : 0};
  } else if ((parts.size() == 3 || parts.size() == 4) && parts[0] == "nan") {
    fault = {"nan", "", std::stoi(parts[1]), std::stoll(parts[2])};
    if (parts.size() == 4) fault.last_step = std::stoll(parts[3]);
  } else if (parts.size() == 2 && parts[0] == "hold") {
    fault = {"hold", "", -1, std::stoll(parts[1])};
  } else {
    std::fprintf(stderr,
                 "VLM_FAULT='%s' is not stop:<point>:<rank>[:<step>], nan:<rank>:<from>[:<to>] or hold:<step>; "
                 "ignored\n",
                 text);
  }
  return fault;
}

const Fault& fault() {
  static const Fault parsed = parse_fault();
  return parsed;
}

bool this_rank(int rank) {
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  return me == rank;
}

}  // namespace

void fault_point(const std::string& point, int64_t step) {
  static bool fired = false;
  const Fault& f = fault();
  if (fired || f.kind != "stop" || f.point != point || step < f.step || !this_rank(f.rank)) return;
  fired = true;
  std::fprintf(stderr, "VLM_FAULT: rank %d stops itself at %s (step %lld)\n", f.rank, point.c_str(),
               static_cast<long long>(step));
  std::fflush(stderr);
  std::raise(SIGSTOP);
}

bool inject_nan_loss(int64_t step) {
  const Fault& f = fault();
  return f.kind == "nan" && step >= f.step && step <= f.last_step && this_rank(f.rank);
}

void hold_for_stop_signal(int64_t step, const std::atomic<int>& stop_requested) {
  const Fault& f = fault();
  if (f.kind != "hold" || step != f.step) return;
  std::fprintf(stderr, "VLM_FAULT: holding after step %lld until a stop signal arrives\n", static_cast<long long>(step));
  std::fflush(stderr);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (stop_requested.load() == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polls the stop flag (Note [Stop signals on one thread])
  }
}

}  // namespace vlm
