#pragma once
// Note [Flight recorder]: every rank keeps a ring of its last operations
// (collectives, point-to-point, communicator creation, control traffic), in
// the manner of PyTorch's Flight Recorder. Each entry has a sequence number
// per *channel*: a group's collectives share one channel ("dp(stage 0)"),
// point-to-point has one per direction and peer ("pp(dp_rank 0)/send:1"), so
// the n-th operation of a channel is the same operation on every rank that
// takes part. When a job hangs, the culprit is found by comparing sequence
// numbers, never timestamps (comm/hang_report.h), and each rank writes its
// ring to <run dir>/flight/rank-<r>.json.
//
// One recorder per process, like the process's MPI state: every backend and
// every rank's hang report reads the same ring.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace vlm {

constexpr size_t kDefaultFlightRecorderEntries = 2048;

enum class OpState { kQueued, kStarted, kCompleted, kFailed };

struct FlightEntry {
  uint64_t id = 0;        // unique within the process
  std::string channel;    // "dp(stage 0)", "pp(dp_rank 0)/recv:0"
  int64_t seq = 0;        // 1-based, per channel
  std::string op;         // "allreduce"
  std::string detail;     // "Float x 4096" or "to rank 1"
  int64_t bytes = 0;
  OpState state = OpState::kQueued;
  double queued_at = 0, started_at = 0, ended_at = 0;  // seconds since the process started
};

// What a rank has done on one channel: the basis of "never arrived".
struct ChannelProgress {
  std::string channel;
  int64_t started = 0;    // highest sequence number started (or queued)
  int64_t completed = 0;  // highest completed
  std::string last_op;    // of the highest started
};

class FlightRecorder {
 public:
  static FlightRecorder& instance();

  void set_capacity(size_t entries);
  // A new operation on `channel`; returns its id and sequence number.
  std::pair<uint64_t, int64_t> record(const std::string& channel, const std::string& op, const std::string& detail,
                                      int64_t bytes);
  void set_state(uint64_t id, OpState state);

  std::vector<ChannelProgress> progress() const;
  // The oldest operation started but not finished ("allreduce #12 on dp(stage 0) for 3.1 s"), or "".
  std::string current() const;
  // The newest completed operation ("allreduce #11 on dp(stage 0)"), or "".
  std::string last_completed() const;

  // The ring as a JSON document; `reason` says why it was written and
  // `did_not_answer` lists the ranks that ignored this rank's survey (the
  // evidence for a stopped rank, whose own record can come late and current).
  std::string to_json(int rank, const std::string& reason, const std::vector<int>& did_not_answer = {}) const;

  static double now();  // seconds since the process started
  // Changes with every recorded operation or state change (heartbeats are sent on change).
  uint64_t version() const { return version_.load(); }

 private:
  FlightRecorder() = default;
  FlightEntry* find(uint64_t id);

  mutable std::mutex mutex_;
  std::atomic<uint64_t> version_{0};
  size_t capacity_ = kDefaultFlightRecorderEntries;
  std::deque<FlightEntry> ring_;
  uint64_t next_id_ = 1;
  std::map<std::string, ChannelProgress> channels_;
};

const char* op_state_name(OpState state);

}  // namespace vlm
