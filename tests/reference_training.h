#pragma once
// The independent reference the parity tests compare every layout against:
// one process, the whole model, a plain loop (model forward, loss, backward,
// clipping, AdamW) with no trainer and no communication. The same config
// gives the same initial model, samples, learning rates and loss
// normalisation as the trainer.

#include <torch/torch.h>

#include <map>
#include <string>

#include "data/batch.h"
#include "data/sampler.h"
#include "model/attention_dropout.h"
#include "model/parameters.h"
#include "model/vlm.h"
#include "proto/config.pb.h"
#include "trainer/setup.h"
#include "trainer/torch_adamw.h"
#include "trainer/training_data.h"

namespace vlm {

class ReferenceTraining {
 public:
  ReferenceTraining(const TrainConfig& config, const TrainingData& data)
      : config_(config), data_(data), sampler_(sampler_for(config, data, 1, 0)), schedule_(lr_schedule_for(config)) {
    torch::manual_seed(static_cast<uint64_t>(config.loop().seed()));
    model_ = VlmModel(model_spec_for(config, data));
    optimizer_ = torch_adamw(unique_parameters(*model_), config.optim());
  }

  // One optimizer step on the whole global batch; returns its loss.
  double step() {
    const int64_t micro_batches = config_.loop().micro_batches();
    for (const torch::Tensor& p : unique_tensors(*model_)) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    model_->train();
    double loss = 0;
    for (int64_t micro = 0; micro < micro_batches; ++micro) {
      const std::vector<int64_t> indices = sampler_.indices(step_, micro);
      const int64_t max_tokens = model_->spec().max_tokens;
      // As wide as the micro-batch's longest caption, as the loader makes it
      // (padded and cut batches give the same results: model_test).
      const Batch batch =
          without_padding(data_.train_set->batch(indices, step_ / sampler_.steps_per_epoch(), max_tokens, false));
      LossReduction reduction;
      reduction.caption_targets_per_rank = static_cast<double>(data_.train_set->caption_counts(indices, max_tokens).targets);
      StageInputs inputs{batch.images, batch.tokens, batch.lengths, WordTokenizer::kPad};
      if (model_->spec().has_dropout()) {  // the masks of the samples' places in the global batch
        const int64_t global = config_.loop().global_batch_size();
        inputs.dropout_keys = dropout_keys(static_cast<uint64_t>(config_.data().seed()), step_,
                                           global_batch_positions(global, micro_batches, 1, 0, micro), torch::kCPU);
      }
      const StageOutput out = model_->forward(inputs, reduction);
      const torch::Tensor micro_loss = out.weighted_loss(model_->spec()) / static_cast<double>(micro_batches);
      micro_loss.backward();
      loss += micro_loss.item<double>();
    }
    const double clip = config_.optim().grad_clip_norm();
    torch::nn::utils::clip_grad_norm_(unique_tensors(*model_), clip > 0 ? clip : std::numeric_limits<double>::infinity());
    for (auto& group : optimizer_->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(schedule_.at(step_));
    }
    optimizer_->step();
    ++step_;
    return loss;
  }

  VlmModel& model() { return model_; }
  std::map<std::string, torch::Tensor> parameters_by_name() const {
    std::map<std::string, torch::Tensor> by_name;
    for (const auto& p : unique_parameters(*model_)) by_name[p.name] = p.tensor;
    return by_name;
  }

 private:
  TrainConfig config_;
  const TrainingData& data_;
  DistributedSampler sampler_;
  WarmupCosine schedule_;
  VlmModel model_{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  int64_t step_ = 0;
};

// ||a - b|| / ||b||, the relative error of one tensor.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
}

}  // namespace vlm
