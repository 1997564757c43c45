#include "comm/backend.h"

#include "comm/cuda_device.h"
#include "comm/mpi_backend.h"
#include "comm/mpi_check.h"
#ifdef VLM_WITH_NCCL
#include "comm/nccl_backend.h"
#endif

namespace vlm {

Backend::Backend(MPI_Comm group, std::string group_name) : group_name_(std::move(group_name)) {
  VLM_MPI_CHECK(MPI_Comm_rank(group, &rank_));
  VLM_MPI_CHECK(MPI_Comm_size(group, &size_));
}

std::string Backend::describe_on_group(const std::string& what) const {
  return what + " on group " + group_name_ + ", rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
         " (" + process_label() + ")";
}

void Backend::check_group_multiple(const std::string& what, const torch::Tensor& whole, const char* whole_name,
                                   const torch::Tensor& part, const char* part_name) const {
  if (whole.numel() != part.numel() * size_ || whole.scalar_type() != part.scalar_type()) {
    throw CommError(what + ": the " + whole_name + " must hold group size(" + std::to_string(size_) + ") x " +
                    std::to_string(part.numel()) + " elements of the " + part_name + "'s dtype, not " +
                    std::to_string(whole.numel()) + " " + c10::toString(whole.scalar_type()));
  }
}

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
