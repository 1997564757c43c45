#pragma once
// GPU detection without a GPU-enabled LibTorch: asks the CUDA runtime directly.

#include <string>

namespace vlm {

// CUDA devices visible to this process. 0 when there is no GPU or no usable
// driver; then `why` holds the runtime's error ("CUDA driver version is
// insufficient for CUDA runtime version" on a machine with no driver).
int cuda_device_count(std::string* why);

}  // namespace vlm
