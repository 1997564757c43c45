#pragma once
// Training samples from WebDataset shards: indexed once at start-up
// (data/shards.h), then each sample read alone by offset, decoded, resized,
// augmented and normalised on demand.
//
// Note [Damaged samples]: a sample that cannot be used (found while indexing,
// or when its image fails to decode) is logged with its shard and key,
// counted once, and replaced by the next usable sample in index order, so a
// batch keeps its size and the replacement is the same on every run. Past
// max_damaged_fraction of all samples, the run stops with a DataError naming
// the shards. The caption-loss normaliser of other ranks does not know about
// a replacement found at decode time: on such a step the normaliser may be
// off by the two captions' length difference.

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "data/shards.h"
#include "data/train_set.h"

namespace vlm {

struct ShardTrainOptions {
  ImageFormat format;
  Augmentation augment;
  double max_damaged_fraction = 0.01;
  uint64_t seed = 0;  // of augmentation
  std::string field = "data.train_shards";  // the config field errors name
};

class ShardTrainSet : public TrainSet {
 public:
  // Indexes `paths`; a DataError if none holds a usable sample or too many are damaged.
  ShardTrainSet(const std::vector<std::string>& paths, const Tokenizer& tokenizer, ShardTrainOptions options);

  int64_t size() const override { return static_cast<int64_t>(set_.samples.size()); }
  const ImageFormat& format() const override { return options_.format; }
  Batch batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t max_tokens, bool pinned) const override;
  CaptionCounts caption_counts(const std::vector<int64_t>& indices, int64_t max_tokens) const override;
  // From each sample's `<key>.json` {"class": ...}; "" without one.
  std::vector<std::string> class_names(const std::vector<int64_t>& indices) const override;

  // Damaged samples found so far (while indexing, and since while decoding).
  int64_t damaged() const override { return damaged_.load(); }

 private:
  // The caption of `index`, or of the next usable sample; `image` (when not
  // null) receives its preprocessed pixels.
  std::string load(int64_t index, int64_t epoch, float* image) const;
  // `index`, or the next sample not yet found damaged.
  int64_t usable(int64_t index) const;
  void record_damage(int64_t index, const std::string& what) const;
  void record_damage(const Damage& damage) const;

  const Tokenizer& tokenizer_;
  ShardTrainOptions options_;
  ShardSet set_;
  std::unique_ptr<ShardReader> reader_;
  // Damage bookkeeping: loader threads share it.
  mutable std::atomic<int64_t> damaged_{0};
  mutable std::mutex damage_mutex_;
  mutable std::set<int64_t> damaged_samples_;  // found at decode time: counted once
  mutable std::map<std::string, int64_t> damage_by_shard_;
  int64_t total_ = 0;                           // samples found, plus those lost to damage
  int64_t damage_budget_ = 0;                   // damaged samples allowed
};


}  // namespace vlm
