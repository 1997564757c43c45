#pragma once
// Model FLOPs per sample, for MFU. Counts matrix multiplications only (2 FLOPs
// per multiply-add), as PaLM and llm.c do; norms, softmax and activations are
// left out. Attention scores count the full T x T square (causal masking
// saves no work in this implementation). Shared weights save parameters, not
// FLOPs: a shared projection is counted in every layer that uses it. Image K/V
// computed once per sharing group is counted once per group. A training step
// costs 3x the forward pass (backward = 2x forward). Text counts the
// positions computed: a batch's width (data/batch.h without_padding), not
// max_tokens. See docs/model.md.

#include "model/spec.h"

namespace vlm {

struct FlopCount {
  double vision = 0;  // forward, per sample
  double text = 0;    // forward, per sample
  double forward() const { return vision + text; }
  double train() const { return 3.0 * forward(); }
};

// With token rows `text_tokens` wide (at most spec.max_tokens).
FlopCount flops_per_sample(const ModelSpec& spec, int64_t text_tokens);

}  // namespace vlm
