#include "comm/device.h"

#include <cstdlib>

#include "comm/cuda_device.h"
#include "comm/text.h"

#ifdef VLM_WITH_NCCL
#include <cuda_runtime_api.h>
#endif

namespace vlm {

torch::Device choose_device(DeviceRequest request, int local_rank, int local_size, const VisibleGpus& gpus,
                            const std::string& host) {
  if (request == DeviceRequest::kCpu || (request == DeviceRequest::kAuto && gpus.count == 0)) return torch::kCPU;
  const char* mask = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string visible = mask == nullptr ? "" : std::string(" (CUDA_VISIBLE_DEVICES=") + mask + ")";
  if (gpus.count == 0) {
    throw DeviceError("device.kind is CUDA, but no GPU is visible on " + host + visible + ": " + gpus.why_none +
                      ". HINT: check nvidia-smi and CUDA_VISIBLE_DEVICES, or use device.kind: AUTO or CPU");
  }
  if (local_size > gpus.count) {
    throw DeviceError(host + " runs " + std::to_string(local_size) + " ranks but sees " + std::to_string(gpus.count) +
                      " GPU" + (gpus.count == 1 ? "" : "s") + visible +
                      ": each rank needs its own GPU (local rank r uses GPU r). HINT: start at most " +
                      std::to_string(gpus.count) + " ranks per node (vlm-launch --nproc-per-node " +
                      std::to_string(gpus.count) + ", srun --ntasks-per-node), or use device.kind: CPU");
  }
  return {torch::kCUDA, static_cast<torch::DeviceIndex>(local_rank)};
}

VisibleGpus visible_gpus() {
  VisibleGpus gpus;
  gpus.count = static_cast<int>(torch::cuda::device_count());
  if (gpus.count == 0) {
    std::string why;
    gpus.why_none = cuda_device_count(&why) > 0 ? "LibTorch was built without CUDA (rebuild against a CUDA LibTorch)" : why;
  }
  return gpus;
}

torch::Device use_device(DeviceRequest request, const ProcessInfo& process) {
  const torch::Device device = choose_device(request, process.local_rank, process.local_size, visible_gpus(), host_name());
#ifdef VLM_WITH_NCCL
  // LibTorch's current device follows the runtime's; without this every
  // rank's first CUDA call would make a context on GPU 0.
  if (device.is_cuda()) cudaSetDevice(device.index());
#endif
  return device;
}

}  // namespace vlm
