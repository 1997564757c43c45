#pragma once
// Image-caption tasks synthesised from Fashion-MNIST, deterministic in (seed, index):
//   SINGLE  one 28x28 item, caption from a few templates ("a photo of a sneaker");
//   PAIR    two items side by side (28x56), "a sneaker left of a coat"
//           (100 distinct captions; order matters, so the model must see where);
//   MIXED   half SINGLE (item in the left slot of a 28x56 canvas), half PAIR.

#include <cstdint>
#include <string>
#include <vector>

#include "data/fashion_mnist.h"
#include "data/mix_seed.h"

namespace vlm {

enum class TaskKind { kSingle, kPair, kMixed };

struct Sample {
  int64_t left = 0;    // item index in the split
  int64_t right = -1;  // item index, or -1 for a single item
  std::string caption;
};

// Caption of a single item with template `t`, and of an ordered pair.
constexpr int kSingleTemplates = 3;
std::string single_caption(int64_t label, int t);
std::string pair_caption(int64_t left_label, int64_t right_label);

// Every word any caption can use (for the tokenizer).
std::vector<std::string> caption_words();

// Every caption a task of `kind` can draw.
std::vector<std::string> task_captions(TaskKind kind);

class Task {
 public:
  // `samples` per epoch; SINGLE uses items 0..min(samples, split)-1 in order.
  Task(TaskKind kind, const FashionMnist& split, int64_t samples, uint64_t seed);

  int64_t size() const { return samples_; }
  int64_t image_width() const { return kind_ == TaskKind::kSingle ? kFashionSide : 2 * kFashionSide; }
  TaskKind kind() const { return kind_; }
  const FashionMnist& split() const { return split_; }

  Sample sample(int64_t index) const;

  // Captions that count as correct for `s` (every template of a single item).
  std::vector<std::string> valid_captions(const Sample& s) const;

 private:
  TaskKind kind_;
  const FashionMnist& split_;
  int64_t samples_;
  uint64_t seed_;
};


}  // namespace vlm
