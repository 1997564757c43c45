#include "comm/backend.h"

#include "comm/cuda_device.h"
#include "comm/mpi_backend.h"
#include "comm/mpi_check.h"
#ifdef VLM_WITH_NCCL
#include "comm/nccl_backend.h"
#endif

namespace vlm {

std::unique_ptr<Backend> make_backend(BackendKind kind, const torch::Device& device, MPI_Comm group,
                                      const std::string& group_name) {
  const bool nccl = kind == BackendKind::kNccl || (kind == BackendKind::kAuto && device.is_cuda());
  if (!nccl) return std::make_unique<MpiBackend>(group, group_name);
  std::string why;
  if (cuda_device_count(&why) == 0) {
    throw CommError("comm.backend: NCCL needs a CUDA GPU, but none is usable on " + process_label() + " (" + why +
                    "). HINT: use comm.backend: MPI (or AUTO, which picks MPI for CPU tensors)");
  }
#ifdef VLM_WITH_NCCL
  return std::make_unique<NcclBackend>(group, group_name, device.is_cuda() ? device.index() : 0);
#else
  throw CommError("comm.backend: NCCL was not built in (VLM_WITH_NCCL=OFF); rebuild with the CUDA toolkit");
#endif
}

}  // namespace vlm
