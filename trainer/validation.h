#pragma once
// Validation on held-out samples of any dataset (eval.shards, or the task
// drawn from the Fashion-MNIST test split), run every eval.every_steps steps
// and at the end of training:
//  - the symmetric contrastive (InfoNCE) loss over all N samples at once;
//  - image->text and text->image R@1 over the N samples: a retrieval counts
//    when the caption found is the query's own caption, token for token, so
//    samples that share a caption ("a photo of a sneaker") are not told apart;
//  - zero-shot accuracy over the samples that name a class, against one
//    prompt per class name found among the N (eval.zero_shot_prompt).
// Every rank of `group` embeds its share of the batches; the embeddings are
// summed over the group, and each rank scores its share of the rows; the
// counts and loss sums are summed, so every rank gets the same result.

#include <string>
#include <vector>

#include "comm/backend.h"
#include "data/train_set.h"
#include "model/vlm.h"
#include "proto/checkpoint.pb.h"
#include "proto/config.pb.h"

namespace vlm {

struct ValidationResult {
  int64_t step = 0;  // steps done when it ran
  int64_t samples = 0;
  double contrastive_loss = 0;
  double image_to_text_r1 = 0;
  double text_to_image_r1 = 0;
  double r1_chance = 0;  // R@1 of a random guess: chance_of_same_caption
  int64_t zero_shot_samples = 0;  // samples naming a class; 0: no zero-shot accuracy
  int64_t zero_shot_classes = 0;
  double zero_shot_accuracy = 0;

  // eval.best_metric's value; a DataError when that metric is undefined here.
  double metric(EvalConfig::Metric which) const;
  std::string summary() const;  // one line
};

// R@1 counts a retrieval right when its caption's tokens equal the true
// caption's, so a random guess is right with the probability that two samples
// share a caption: the sum over distinct rows of (count / n)^2.
double chance_of_same_caption(const torch::Tensor& token_rows);

// "a photo of {a} {}" with "sneaker" -> "a photo of a sneaker" ({a}: "a" or "an").
std::string zero_shot_prompt(const std::string& pattern, const std::string& class_name);

class Validator {
 public:
  // `held_out` outlives it. Reads every sample's class name now; a
  // DataError when eval.best_metric is zero-shot accuracy and none names one.
  Validator(const TrainSet& held_out, const Tokenizer& tokenizer, const EvalConfig& config);
  int64_t samples() const { return samples_; }
  // Collective over `group`.
  ValidationResult run(VlmModel& model, int64_t step, Backend& group, Millis timeout);

 private:
  const TrainSet& held_out_;
  const Tokenizer& tokenizer_;
  EvalConfig config_;
  int64_t samples_;
  std::vector<std::string> classes_;  // distinct class names among the samples, sorted
};

// Which validation is the best so far by eval.best_metric; restored on resume
// from the record of the checkpoint ROOT/best names.
class BestTracker {
 public:
  explicit BestTracker(EvalConfig::Metric metric) : metric_(metric) {}
  // Ignored when recorded for another metric or another number of samples.
  void restore(const ValidationRecord& best, int64_t samples);
  // Whether `result` beats every validation before it (and records it if so);
  // a value that is not finite never does.
  bool offer(const ValidationResult& result);
  ValidationRecord record(const ValidationResult& result, bool best) const;

 private:
  EvalConfig::Metric metric_;
  bool have_ = false;
  double best_ = 0;
};

}  // namespace vlm
