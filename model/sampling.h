#pragma once
// Choosing each caption token from the model's logits: greedy (argmax), or
// sampled with a temperature, top-k and top-p (nucleus) filtering, and the
// notes' entropy-adaptive temperature (seeds 000, section 3.2). The random
// draw of a token is keyed by (seed, sample index, position) alone, so a
// sample's caption does not depend on the batch it is decoded in, nor on the
// number of ranks.

#include <torch/torch.h>

#include "model/sampling_options.h"

#include <cstdint>
#include <vector>

namespace vlm {

// Per caption, the entropies the adaptive temperature looks back on.
using EntropyHistory = std::vector<std::vector<double>>;

// The next token of each row of `logits` [B, V]. Row r is sample
// `first_sample + r`, at caption position `position`.
torch::Tensor pick_tokens(const torch::Tensor& logits, const Sampling& sampling, int64_t first_sample, int64_t position,
                          EntropyHistory* history);

// The uniform number in [0, 1) drawn for (seed, sample, position).
double uniform_draw(uint64_t seed, int64_t sample, int64_t position);

}  // namespace vlm
