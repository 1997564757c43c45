#pragma once
// GPU detection without a GPU-enabled LibTorch: asks the CUDA runtime directly.

#include <torch/torch.h>

#include <string>

namespace vlm {

// CUDA devices visible to this process. 0 when there is no GPU or no usable
// driver; then `why` holds the runtime's error ("CUDA driver version is
// insufficient for CUDA runtime version" on a machine with no driver).
int cuda_device_count(std::string* why);

// The CUDA runtime's index for `device`: its own index, or the current
// device when it has none (torch::Device(torch::kCUDA) has index -1).
int cuda_device_index(const torch::Device& device);

}  // namespace vlm
