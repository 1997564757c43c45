#pragma once
// SplitMix64: a counter-based random number, the same on every platform. The
// one source of randomness of sample synthesis, shuffles and augmentation.

#include <cstdint>

namespace vlm {

inline uint64_t mix_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace vlm
