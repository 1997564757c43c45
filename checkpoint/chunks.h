#pragma once
// Work over many byte ranges (tensors) cut into equal chunks, so that threads
// share it evenly whatever the tensors' sizes and each chunk is still in
// cache when its next pass (a checksum after a read) runs.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace vlm {

constexpr uint64_t kChunkBytes = 4ull << 20;

struct Chunk {
  size_t item;  // which range
  uint64_t begin, length;
};

inline std::vector<Chunk> split_into_chunks(const std::vector<uint64_t>& lengths) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < lengths.size(); ++i) {
    for (uint64_t begin = 0; begin < lengths[i]; begin += kChunkBytes) {
      chunks.push_back({i, begin, std::min(kChunkBytes, lengths[i] - begin)});
    }
  }
  return chunks;
}

// Runs work(chunk, index) for every chunk on ATen's intra-op threads.
template <typename Work>
void parallel_over_chunks(const std::vector<Chunk>& chunks, Work work) {
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) work(chunks[c], static_cast<size_t>(c));
  });
}

}  // namespace vlm
