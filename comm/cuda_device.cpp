#include "comm/cuda_device.h"

#ifdef VLM_WITH_NCCL
#include <cuda_runtime_api.h>
#endif

namespace vlm {

int cuda_device_count(std::string* why) {
#ifdef VLM_WITH_NCCL
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (why != nullptr) *why = cudaGetErrorString(status);
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "no CUDA device found";
  return count;
#else
  if (why != nullptr) *why = "vlmtrain was built without CUDA/NCCL (VLM_WITH_NCCL=OFF)";
  return 0;
#endif
}

int cuda_device_index(const torch::Device& device) {
  if (device.has_index()) return device.index();
  int current = 0;
#ifdef VLM_WITH_NCCL
  cudaGetDevice(&current);
#endif
  return current;
}

}  // namespace vlm
