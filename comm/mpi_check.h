#pragma once
// Every MPI call goes through VLM_MPI_CHECK: a failure throws CommError with
// file:line, MPI's error string, the host and the rank.

#include <mpi.h>

#include <stdexcept>
#include <string>

namespace vlm {

class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "file:line: call failed: message (host:rank N)", thrown as CommError; the
// one shape of every MPI, NCCL and CUDA failure.
[[noreturn]] void throw_library_error(const char* call, const char* file, int line, const std::string& message);
[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);

// "host:rank N" of this process, for messages.
std::string process_label();

}  // namespace vlm

#define VLM_MPI_CHECK(call)                                               \
  do {                                                                    \
    const int vlm_mpi_code_ = (call);                                     \
    if (vlm_mpi_code_ != MPI_SUCCESS) {                                   \
      ::vlm::throw_mpi_error(vlm_mpi_code_, #call, __FILE__, __LINE__);   \
    }                                                                     \
  } while (0)
