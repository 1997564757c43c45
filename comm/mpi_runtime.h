#pragma once
// Owns MPI for the life of the process: MPI_Init_thread and the peer monitor
// (comm/peer_monitor.h) on construction; on destruction the monitor stops and
// MPI_Finalize runs under a deadline, so a rank that never reaches the end of
// the job cannot keep the others waiting in it forever. Errors on
// MPI_COMM_WORLD return codes (so VLM_MPI_CHECK can report them) instead of
// aborting silently.

#include <chrono>
#include <memory>

namespace vlm {

class PeerMonitor;

class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // How long MPI_Finalize may wait for the other ranks before this one exits anyway.
  void set_shutdown_timeout(std::chrono::milliseconds timeout) { shutdown_timeout_ = timeout; }

  // Ends every rank of the job now (a rank that failed must not leave the
  // others waiting in a collective forever). Prefer end_job() (peer_monitor.h),
  // which first has every rank write its flight record.
  [[noreturn]] static void abort_job(int exit_code);

 private:
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds shutdown_timeout_{120'000};
  std::unique_ptr<PeerMonitor> monitor_;
};

}  // namespace vlm
