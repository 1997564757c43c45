#pragma once
// The samples a run trains on, by index: the Fashion-MNIST task (TaskTrainSet)
// or WebDataset shards (data/shard_train_set.h). The sampler decides which
// indices form each batch; a TrainSet only makes them into model inputs.
// Implementations are safe to call from several loader threads at once.

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/preprocess.h"
#include "data/task.h"
#include "data/tokenizer.h"

namespace vlm {

// What every rank knows of a global micro-batch's captions.
struct CaptionCounts {
  int64_t targets = 0;  // tokens after <bos>, through <eos>: the caption loss's normaliser
  int64_t longest = 0;  // tokens of the longest caption: the batches' width (without_padding)
  void add(int64_t tokens) {
    targets += tokens - 1;
    longest = std::max(longest, tokens);
  }
};

class TrainSet {
 public:
  virtual ~TrainSet() = default;
  virtual int64_t size() const = 0;
  virtual const ImageFormat& format() const = 0;
  // Model inputs of samples `indices`; augmentation (if any) draws from `epoch`.
  virtual Batch batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t max_tokens, bool pinned) const = 0;
  // Caption targets and the longest caption of `indices`, which every rank
  // computes for the global micro-batch.
  virtual CaptionCounts caption_counts(const std::vector<int64_t>& indices, int64_t max_tokens) const = 0;
  // The class each of `indices` names ("" for none): validation's zero-shot
  // labels. Call after batch() of the same indices, so that a damaged sample
  // found there is replaced here too.
  virtual std::vector<std::string> class_names(const std::vector<int64_t>& indices) const = 0;
  // Damaged samples found so far, skipped (Note [Damaged samples]).
  virtual int64_t damaged() const { return 0; }
};

// The synthesised Fashion-MNIST task (data/task.h) on its 28-pixel canvas.
class TaskTrainSet : public TrainSet {
 public:
  TaskTrainSet(const Task& task, const Tokenizer& tokenizer)
      : task_(task), tokenizer_(tokenizer), format_(fashion_format(kFashionSide, task.image_width())) {}
  int64_t size() const override { return task_.size(); }
  const ImageFormat& format() const override { return format_; }
  Batch batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t max_tokens, bool pinned) const override;
  CaptionCounts caption_counts(const std::vector<int64_t>& indices, int64_t max_tokens) const override;
  // A single item's class name; "" for a pair.
  std::vector<std::string> class_names(const std::vector<int64_t>& indices) const override;

 private:
  const Task& task_;
  const Tokenizer& tokenizer_;
  ImageFormat format_;
};

}  // namespace vlm
