#pragma once
// Which device a rank computes on. Rank r of a host uses GPU local_rank of
// those CUDA_VISIBLE_DEVICES leaves visible (LibTorch and NCCL number them
// from 0), so ranks on one host never share a GPU: NCCL refuses a duplicate
// GPU in a communicator.

#include <torch/torch.h>

#include <string>

#include "comm/topology.h"

namespace vlm {

enum class DeviceRequest {
  kAuto,  // CUDA when LibTorch sees a GPU, else the CPU
  kCpu,
  kCuda,  // none visible is an error
};

// What this host offers (a pure function's input, so tests need no GPU).
struct VisibleGpus {
  int count = 0;         // as LibTorch counts them
  std::string why_none;  // when 0: the CUDA runtime's reason, or "LibTorch was built without CUDA"
};

// The device for local rank `local_rank` of `local_size` on `host`. Errors
// (DeviceError) name the host and say how to fix it: CUDA asked for and no
// GPU visible, or more local ranks than visible GPUs.
torch::Device choose_device(DeviceRequest request, int local_rank, int local_size, const VisibleGpus& gpus,
                            const std::string& host);

// The GPUs this process sees through LibTorch, and why none.
VisibleGpus visible_gpus();

// choose_device() for this process; a CUDA device also becomes the current
// one (LibTorch's and NCCL's streams and allocations go to it).
torch::Device use_device(DeviceRequest request, const ProcessInfo& process);

class DeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace vlm
