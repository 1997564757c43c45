#pragma once
// Writes samples into numbered WebDataset shards (`<prefix>-00000.tar`, ...),
// a new shard every `samples_per_shard` samples, each one renamed into place
// only when complete. Reports progress on stderr as each shard lands.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "data/tar.h"

namespace vlm {

class ShardSink {
 public:
  // `expected_samples` only sizes the progress line (0: unknown).
  ShardSink(std::string out_dir, std::string prefix, int64_t samples_per_shard, int64_t expected_samples = 0);

  // `image_ext` is "png", "jpg" or "jpeg"; `key` must not contain '.'.
  void add(const std::string& key, const std::string& image, const std::string& image_ext, const std::string& caption,
           const std::string& json = "");

  // Closes the last shard; returns the brace pattern naming every shard
  // ("DIR/train-{00000..00005}.tar"), to put in data.shards.
  std::string finish();

  int64_t samples() const { return samples_; }

 private:
  void close_shard();

  std::string out_dir_, prefix_;
  int64_t samples_per_shard_, expected_;
  int64_t samples_ = 0, in_shard_ = 0, shards_ = 0, bytes_ = 0;
  std::unique_ptr<TarWriter> shard_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace vlm
