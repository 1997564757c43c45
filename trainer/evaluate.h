#pragma once
// Held-out evaluation on the Fashion-MNIST test split:
//  - zero-shot classification of all 10,000 test images against the 10 prompts
//    "a photo of a <class>" (tasks with single items: SINGLE, MIXED);
//  - image->text and text->image R@1 on 100 held-out pairs, one per ordered
//    class pair, so the 100 captions are distinct and chance is 0.01 (PAIR, MIXED);
//  - exact-match rate of KV-cached greedy captions on held-out samples of the task
//    (a single item's caption may use any template).
// Every rank of `group` evaluates its share of the batches (batch b on rank
// b mod size, so each batch is the one a single process would run) and the
// counts are summed: every rank gets the same result.

#include <cstdint>
#include <string>

#include "comm/backend.h"
#include "model/sampling.h"
#include "model/vlm.h"
#include "proto/config.pb.h"
#include "trainer/training_data.h"

namespace vlm {

struct EvalResult {
  int64_t zero_shot_images = 0;  // 0 when the task has no single items
  double zero_shot_accuracy = 0;
  int64_t retrieval_pairs = 0;   // 0 when the task has no pairs
  double image_to_text_r1 = 0;
  double text_to_image_r1 = 0;
  int64_t caption_samples = 0;  // 0: not measured (eval.caption_samples is 0)
  double caption_exact_match = 0;

  std::string summary() const;
};

// Each rank's share of the held-out work, and the sums over `group`.
class EvalShare {
 public:
  EvalShare(Backend& group, Millis timeout) : group_(group), timeout_(timeout) {}
  bool mine(int64_t batch) const { return batch % group_.size() == group_.rank(); }
  int64_t sum(int64_t count) const;

 private:
  Backend& group_;
  Millis timeout_;
};

double zero_shot_accuracy(VlmModel& model, const TrainingData& data, int64_t batch_size, const EvalShare& share);
// Returns {image->text R@1, text->image R@1} over the 100 held-out pairs (every rank computes them).
std::pair<double, double> pair_retrieval_r1(VlmModel& model, const TrainingData& data, uint64_t seed);
// The share of `samples` held-out captions decoded exactly (greedily unless
// `sampling` says otherwise; its draws are keyed by the sample's index).
double caption_exact_match(VlmModel& model, const TrainingData& data, int64_t samples, int64_t batch_size,
                           uint64_t seed, const EvalShare& share, const Sampling& sampling = {});

// Collective over `group`.
EvalResult evaluate(VlmModel& model, const TrainingData& data, const EvalConfig& config, Backend& group,
                    Millis timeout);

}  // namespace vlm
