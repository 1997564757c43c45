#pragma once
// Owns MPI for the life of the process: MPI_Init_thread on construction,
// MPI_Finalize on destruction. Errors on MPI_COMM_WORLD return codes (so
// VLM_MPI_CHECK can report them) instead of aborting silently.

namespace vlm {

class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Ends every rank of the job now (a rank that failed must not leave the
  // others waiting in a collective forever).
  [[noreturn]] static void abort_job(int exit_code);

 private:
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace vlm
