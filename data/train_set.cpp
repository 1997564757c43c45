#include "data/train_set.h"

namespace vlm {

Batch TaskTrainSet::batch(const std::vector<int64_t>& indices, int64_t, int64_t max_tokens, bool pinned) const {
  std::vector<Sample> samples;
  samples.reserve(indices.size());
  for (int64_t index : indices) samples.push_back(task_.sample(index));
  return make_batch(task_, tokenizer_, samples, max_tokens, pinned);
}

CaptionCounts TaskTrainSet::caption_counts(const std::vector<int64_t>& indices, int64_t) const {
  CaptionCounts counts;
  for (int64_t index : indices) counts.add(static_cast<int64_t>(tokenizer_.encode(task_.sample(index).caption).size()));
  return counts;
}

std::vector<std::string> TaskTrainSet::class_names(const std::vector<int64_t>& indices) const {
  std::vector<std::string> names;
  const auto* labels = task_.split().labels.data_ptr<int64_t>();
  for (int64_t index : indices) {
    const Sample s = task_.sample(index);
    names.push_back(s.right < 0 ? kFashionClassNames[labels[s.left]] : "");
  }
  return names;
}

}  // namespace vlm
