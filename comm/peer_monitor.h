#pragma once
// The ranks watch each other on a side communicator of their own, with a
// thread of their own, so that a rank whose training thread is stuck in a
// collective (or a rank that is stopped or dead) can still be found:
//  - every rank sends its progress (phase, current operation, per-channel
//    sequence numbers from the flight recorder) to its successor
//    (rank + 1 mod world) when it changes, at most every 100 ms, and at least
//    once a second: what a stopped rank last said survives on a live one
//    (O(world) messages, however large the job);
//  - when an operation times out, the rank that noticed asks every rank for
//    its progress and its predecessor's last heartbeat, and to write its
//    flight record; it waits a bounded time, prints who never arrived
//    (Note [Finding the stuck rank]) and ends the job from where it noticed.
//
// One monitor per process, owned by MpiRuntime; the functions below reach it.

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/hang_report.h"

namespace vlm {

using Millis = std::chrono::milliseconds;

class PeerMonitor {
 public:
  // Collective over `world` (duplicated); starts the monitor thread.
  explicit PeerMonitor(MPI_Comm world);
  ~PeerMonitor();  // stops the thread and frees the communicator
  PeerMonitor(const PeerMonitor&) = delete;
  PeerMonitor& operator=(const PeerMonitor&) = delete;

  // Asks every other rank for its progress and to write its flight record
  // (with `reason`), waiting at most `patience`; `known[r]` is what is known of
  // rank r. Only one call per process proceeds; a second one waits forever
  // (the first ends the job).
  std::vector<std::optional<RankProgress>> survey(const std::string& reason, Millis patience);

  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  struct Wire;
  void loop();
  void serve_queries();
  void send_heartbeat();
  void receive_heartbeats();

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::atomic<bool> stopping_{false};
  std::mutex predecessor_mutex_;
  std::unique_ptr<Wire> predecessor_;  // its last heartbeat
  std::chrono::steady_clock::time_point predecessor_seen_;
  std::mutex survey_mutex_;
  std::thread thread_;
};

// What this rank is doing, for heartbeats and reports ("step 12", "evaluation").
void set_phase(const std::string& phase);
std::string current_phase();
// Where flight records go: <dir>/flight/rank-<r>.json (default: the working directory).
void set_run_directory(const std::string& dir);
// Writes this rank's flight record; returns its path ("" if it could not be
// written). `did_not_answer`: the ranks that ignored this rank's survey.
std::string write_flight_record(const std::string& reason, const std::vector<int>& did_not_answer = {});

// The job cannot go on: report who is stuck (when a monitor runs), have every
// live rank write its flight record, and end every rank (MPI_Abort). Called
// where the problem was noticed. The one destructor that calls it is
// ~MpiBackend's, and only for an operation still inside MPI past its
// deadline: joining that thread would never return. The report is printed
// first, and the job ends within 10 s even if the flight record's write
// blocks (the run folder's storage may be what is stuck).
[[noreturn]] void end_job_on_hang(const StuckOperation& stuck);
// The same for an error: `reason` is printed and recorded.
[[noreturn]] void end_job(const std::string& reason, int exit_code = 1);

// Runs a blocking call that has no timeout of its own (communicator creation)
// under a deadline: if the guard is still alive when it expires, the job ends
// through end_job_on_hang(stuck).
class DeadlineGuard {
 public:
  DeadlineGuard(StuckOperation stuck, Millis timeout);
  ~DeadlineGuard();
  DeadlineGuard(const DeadlineGuard&) = delete;
  DeadlineGuard& operator=(const DeadlineGuard&) = delete;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::thread thread_;
};

// Runs `call`, a blocking collective with no timeout of its own, as the next
// operation `op` of `channel` in the flight recorder, under a DeadlineGuard:
// if it has not returned after `timeout`, the job ends with a report of which
// of `participants` (world ranks) never arrived.
void run_with_deadline(const std::string& channel, const std::string& op, const std::string& description,
                       const std::vector<int>& participants, Millis timeout, const std::function<void()>& call);

}  // namespace vlm
