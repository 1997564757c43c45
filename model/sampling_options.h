#pragma once
// How captions choose their tokens (model/sampling.h), without LibTorch, for
// command lines.

#include <cstdint>

namespace vlm {

struct Sampling {
  double temperature = 0;  // 0: greedy; else logits / temperature before sampling
  int64_t top_k = 0;       // keep the k most probable tokens (0: all)
  double top_p = 1;        // keep the fewest most probable tokens whose probability reaches top_p
  // The notes' rule: each step divides the temperature by 1.2 when the
  // distribution's entropy is at least the mean of this caption's last 5
  // entropies (this one included), so the first token and any step less
  // certain than the recent ones are sharper.
  bool adaptive_temperature = false;
  uint64_t seed = 0;
  bool greedy() const { return temperature == 0; }
};

}  // namespace vlm
