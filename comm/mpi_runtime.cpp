#include "comm/mpi_runtime.h"

#include <glog/logging.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>

#include "comm/mpi_check.h"
#include "comm/text.h"
#include "comm/peer_monitor.h"

namespace vlm {

std::string process_label() {
  int initialized = 0, rank = -1;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return host_name() + ":rank " + std::to_string(rank);
}

void throw_library_error(const char* call, const char* file, int line, const std::string& message) {
  throw CommError(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " + message + " (" +
                  process_label() + ")");
}

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw_library_error(call, file, line, text);
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int provided = 0;
  VLM_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  VLM_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  VLM_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  VLM_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  if (provided < MPI_THREAD_MULTIPLE) {
    // The communication thread runs collectives while the training thread makes its own MPI calls.
    throw CommError("MPI provides thread level " + std::to_string(provided) +
                    ", but vlmtrain needs MPI_THREAD_MULTIPLE (" + std::to_string(MPI_THREAD_MULTIPLE) +
                    "). HINT: use an MPI library built with thread support (Open MPI 4 and MPICH are)");
  }
  monitor_ = std::make_unique<PeerMonitor>(MPI_COMM_WORLD);
}

MpiRuntime::~MpiRuntime() {
  monitor_.reset();
  // MPI_Finalize waits for every rank. Nothing can be asked of the others any
  // more (their monitors may be gone): after the deadline, this rank leaves.
  const std::string label = process_label();
  std::mutex mutex;
  std::condition_variable finalized;
  bool done = false;
  std::thread deadline([&] {
    std::unique_lock<std::mutex> lock(mutex);
    if (finalized.wait_for(lock, shutdown_timeout_, [&] { return done; })) return;
    std::fprintf(stderr, "vlm: %s: MPI_Finalize did not return within %.0f s: another rank never reached the end "
                         "of the job; exiting\n", label.c_str(), shutdown_timeout_.count() / 1000.0);
    std::fflush(stderr);
    std::_Exit(1);
  });
  const int code = MPI_Finalize();
  {
    std::lock_guard<std::mutex> lock(mutex);
    done = true;
  }
  finalized.notify_all();
  deadline.join();
  if (code != MPI_SUCCESS) std::fprintf(stderr, "vlm: MPI_Finalize failed with code %d\n", code);
}

void MpiRuntime::abort_job(int exit_code) {
  // mpirun's own "MPI_ABORT was invoked on rank R" can be lost (Open MPI 4.1
  // drops it under load: "show_help.c: Data unpack would read past end of
  // buffer"), so the rank says it itself; the UTC time lets a launcher tell
  // the first of several aborting ranks.
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", std::gmtime(&now.tv_sec));
  std::fprintf(stderr, "vlm: %s ends the job with MPI_Abort (exit code %d) at %s.%06ldZ\n", process_label().c_str(),
               exit_code, when, now.tv_nsec / 1000);
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace vlm
