#include "data/task.h"

#include <algorithm>
#include <sstream>

namespace vlm {
namespace {

const char* kTemplates[kSingleTemplates] = {"a photo of", "a picture of", "an image of"};

std::string with_article(int64_t label) {
  const std::string name = kFashionClassNames[label];
  return (name[0] == 'a' ? "an " : "a ") + name;
}

}  // namespace

std::string single_caption(int64_t label, int t) {
  return std::string(kTemplates[t]) + " " + with_article(label);
}

std::string pair_caption(int64_t left_label, int64_t right_label) {
  return with_article(left_label) + " left of " + with_article(right_label);
}

std::vector<std::string> caption_words() {
  std::vector<std::string> words;
  auto add = [&](const std::string& text) {
    std::istringstream in(text);
    std::string w;
    while (in >> w) words.push_back(w);
  };
  for (int64_t c = 0; c < kFashionClasses; ++c) {
    for (int t = 0; t < kSingleTemplates; ++t) add(single_caption(c, t));
    add(pair_caption(c, c));
  }
  return words;
}

std::vector<std::string> task_captions(TaskKind kind) {
  std::vector<std::string> captions;
  for (int64_t a = 0; a < kFashionClasses; ++a) {
    for (int t = 0; kind != TaskKind::kPair && t < kSingleTemplates; ++t) captions.push_back(single_caption(a, t));
    for (int64_t b = 0; kind != TaskKind::kSingle && b < kFashionClasses; ++b) captions.push_back(pair_caption(a, b));
  }
  return captions;
}

Task::Task(TaskKind kind, const FashionMnist& split, int64_t samples, uint64_t seed)
    : kind_(kind), split_(split), samples_(samples), seed_(seed) {
  if (kind_ == TaskKind::kSingle) samples_ = std::min(samples_, split.size());
}

Sample Task::sample(int64_t index) const {
  const uint64_t r = mix_seed(seed_, static_cast<uint64_t>(index));
  const auto* labels = split_.labels.data_ptr<int64_t>();
  const uint64_t n = static_cast<uint64_t>(split_.size());
  const bool single = kind_ == TaskKind::kSingle || (kind_ == TaskKind::kMixed && (r & 1) == 0);
  Sample s;
  if (single) {
    s.left = kind_ == TaskKind::kSingle ? index : static_cast<int64_t>(mix_seed(r, 1) % n);
    s.caption = single_caption(labels[s.left], static_cast<int>(mix_seed(r, 2) % kSingleTemplates));
  } else {
    s.left = static_cast<int64_t>(mix_seed(r, 1) % n);
    s.right = static_cast<int64_t>(mix_seed(r, 3) % n);
    s.caption = pair_caption(labels[s.left], labels[s.right]);
  }
  return s;
}

std::vector<std::string> Task::valid_captions(const Sample& s) const {
  const auto* labels = split_.labels.data_ptr<int64_t>();
  if (s.right >= 0) return {pair_caption(labels[s.left], labels[s.right])};
  std::vector<std::string> all;
  for (int t = 0; t < kSingleTemplates; ++t) all.push_back(single_caption(labels[s.left], t));
  return all;
}

}  // namespace vlm
