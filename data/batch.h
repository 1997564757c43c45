#pragma once
// Turns samples into model inputs.

#include <torch/torch.h>

#include <vector>

#include "data/task.h"
#include "data/tokenizer.h"

namespace vlm {

struct Batch {
  torch::Tensor images;   // float [B, C, H, W], normalised with the dataset's mean/std
  torch::Tensor tokens;   // int64 [B, max_tokens], <pad> after <eos>
  torch::Tensor lengths;  // int64 [B], tokens up to and including <eos>
  int64_t size() const { return tokens.size(0); }
};

// Draws `s` on a canvas of `width` pixels: left item at x 0..27, right at 28..55.
// A caption longer than max_tokens is a DataError naming model.text.max_tokens.
// `pinned`: in page-locked memory, so that a copy to a GPU can be asynchronous
// (only with a CUDA LibTorch).
Batch make_batch(const Task& task, const Tokenizer& tokenizer, const std::vector<Sample>& samples,
                 int64_t max_tokens, bool pinned = false);

// The batch on `device`: for a GPU, copies that do not block the host (from
// pinned memory); on the CPU, the batch itself.
Batch to_device(const Batch& batch, const torch::Device& device);

}  // namespace vlm
