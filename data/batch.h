#pragma once
// Turns samples into model inputs.

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "data/task.h"
#include "data/tokenizer.h"

namespace vlm {

struct Batch {
  torch::Tensor images;   // float [B, C, H, W], normalised with the dataset's mean/std
  torch::Tensor tokens;   // int64 [B, T], T <= max_tokens, <pad> after <eos>
  torch::Tensor lengths;  // int64 [B], tokens up to and including <eos>
  int64_t size() const { return tokens.size(0); }
};

// Draws `s` on a canvas of `width` pixels: left item at x 0..27, right at 28..55.
// A caption longer than max_tokens is a DataError naming model.text.max_tokens.
// `pinned`: in page-locked memory, so that a copy to a GPU can be asynchronous
// (only with a CUDA LibTorch).
Batch make_batch(const Task& task, const Tokenizer& tokenizer, const std::vector<Sample>& samples,
                 int64_t max_tokens, bool pinned = false);

// `batch` without the token columns that are padding: cut to its longest
// caption, or (width > 0) to `width` columns, the global micro-batch's
// longest, so that every rank and every layout computes on the same shapes.
// A caption longer than `width` (only a damaged sample's replacement can be)
// is cut as encode_truncated cuts it. No position before a caption's end
// attends to one after it, so the model's outputs for the captions are those
// of the padded batch; the text tower's work shrinks with the width
// (attention with its square). Contiguous, and pinned if `batch` was.
Batch without_padding(const Batch& batch, int64_t width = 0);

// `caption` as token ids, cut to `max_tokens` with <eos> kept last (real
// captions may be longer than the model's context).
std::vector<int64_t> encode_truncated(const Tokenizer& tokenizer, const std::string& caption, int64_t max_tokens);

// Token rows [N, longest] (<pad> after <eos>) and lengths [N] of `texts`,
// each cut to `max_tokens` as encode_truncated cuts it; `longest` is the
// longest of them.
std::pair<torch::Tensor, torch::Tensor> tokenize(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                                 int64_t max_tokens);

// The batch on `device`: for a GPU, copies that do not block the host (from
// pinned memory); on the CPU, the batch itself.
Batch to_device(const Batch& batch, const torch::Device& device);

}  // namespace vlm
