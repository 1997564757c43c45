#pragma once
// Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or plain.
// Magic numbers, dimensions and lengths are checked; any mismatch is a
// DataError naming the file.

#include <torch/torch.h>

#include <stdexcept>
#include <string>

namespace vlm {

class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// IDX3 images (magic 0x00000803) -> uint8 [N, rows, cols].
torch::Tensor read_idx_images(const std::string& path);

// IDX1 labels (magic 0x00000801) -> int64 [N], each checked to be < `classes`.
torch::Tensor read_idx_labels(const std::string& path, int64_t classes);

}  // namespace vlm
