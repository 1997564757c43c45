#include "trainer/trainer.h"

#include <chrono>

#include "comm/mpi_check.h"
#include "data/batch.h"
#include "model/parameters.h"
#include "trainer/optimizer.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

ModelSpec model_spec_for(const TrainConfig& config, const TrainingData& data) {
  return model_spec(config.model(), kFashionSide, data.train_task->image_width(), data.tokenizer.vocab_size());
}

Trainer::Trainer(const TrainConfig& config, const Topology& topology, MPI_Comm dp_group, const TrainingData& data)
    : config_(config),
      topology_(topology),
      dp_group_(dp_group),
      data_(data),
      sampler_(data.train_task->size(), config.loop().global_batch_size(), topology.data_parallel,
               topology.dp_rank(), static_cast<uint64_t>(config.data().seed())) {
  torch::manual_seed(static_cast<uint64_t>(config.loop().seed()));
  model_ = VlmModel(model_spec_for(config, data));
  parameters_ = unique_tensors(*model_);
  optimizer_ = make_adamw(*model_, config.optim());
  gradients_ = std::make_unique<GradientAllreduce>(parameters_, dp_group_);
  gradients_->broadcast_parameters();  // replicas start identical whatever their seeds
  schedule_ = WarmupCosine{config.optim().lr(), config.optim().min_lr_ratio(), config.optim().warmup_steps(),
                           config.loop().steps()};
}

StepStats Trainer::train_step() {
  const auto start = Clock::now();
  StepStats stats;
  stats.step = step_;

  std::vector<Sample> samples;
  for (int64_t index : sampler_.indices(step_)) samples.push_back(data_.train_task->sample(index));
  Batch batch = make_batch(*data_.train_task, data_.tokenizer, samples, model_->spec().max_tokens);
  stats.data_seconds = seconds_since(start);

  model_->train();
  optimizer_->zero_grad();
  VlmLoss loss = model_->loss(model_->forward(batch.images, batch.tokens, batch.lengths), batch.tokens,
                              WordTokenizer::kPad);
  loss.total.backward();
  gradients_->average_gradients();

  const double clip = config_.optim().grad_clip_norm();
  stats.grad_norm = clip > 0 ? torch::nn::utils::clip_grad_norm_(parameters_, clip)
                             : torch::nn::utils::clip_grad_norm_(parameters_, std::numeric_limits<double>::infinity());
  stats.learning_rate = schedule_.at(step_);
  set_learning_rate(*optimizer_, stats.learning_rate);
  optimizer_->step();

  // Losses for the log: means over the DP group (three floats, one tiny allreduce).
  double losses[3] = {loss.total.item<double>(), loss.contrastive.item<double>(), loss.caption.item<double>()};
  VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, losses, 3, MPI_DOUBLE, MPI_SUM, dp_group_));
  stats.loss = losses[0] / topology_.data_parallel;
  stats.contrastive_loss = losses[1] / topology_.data_parallel;
  stats.caption_loss = losses[2] / topology_.data_parallel;
  stats.global_samples = config_.loop().global_batch_size();
  ++step_;
  stats.seconds = seconds_since(start);
  return stats;
}

}  // namespace vlm
