#pragma once
// What a rank leaves in the run directory for the launcher and for people:
// its metrics endpoint (endpoints/rank-<r>.json, which vlm-launch turns into
// Prometheus scrape targets) and, on rank 0, one JSON line per logged step
// (metrics.jsonl, which vlm-report draws). See docs/operations.md.

#include <cstdint>
#include <cstdio>
#include <string>

#include "comm/topology.h"

namespace vlm {

struct StepStats;

// Writes RUN_DIR/endpoints/rank-<r>.json atomically (write_file_durably):
// {"rank":r,"stage":s,"dp_rank":d,"host":"...","address":"host:port"}.
void write_endpoint_file(const std::string& run_dir, const Topology& topology, const std::string& scrape_address);

// Appends to RUN_DIR/metrics.jsonl: a resumed run continues the file. A run
// that starts at step 0 begins a new one; the lines of an earlier run there
// are kept in metrics-N.jsonl (N = 1, 2, ..., oldest first), not mixed in.
class StepLog {
 public:
  StepLog(const std::string& run_dir, bool resumed);
  ~StepLog();
  StepLog(const StepLog&) = delete;
  StepLog& operator=(const StepLog&) = delete;

  // Every step; a line is written when `logged` (loop.log_every, the last step).
  void record(const StepStats& stats, bool logged);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  double samples_ = 0;  // since the last line
  double seconds_ = 0;
};

}  // namespace vlm
