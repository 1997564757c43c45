#include "trainer/trainer.h"

#include <chrono>

#include "comm/gather_with_grad.h"
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

Millis seconds_to_millis(double seconds) { return Millis(static_cast<int64_t>(seconds * 1000)); }

BackendKind backend_kind(CommConfig::Backend backend) {
  switch (backend) {
    case CommConfig::MPI: return BackendKind::kMpi;
    case CommConfig::NCCL: return BackendKind::kNccl;
    case CommConfig::AUTO: return BackendKind::kAuto;
  }
  return BackendKind::kAuto;
}

ReducerOptions reducer_options(const CommConfig& config, Millis timeout) {
  ReducerOptions options;
  options.bucket_cap_bytes = config.bucket_cap_bytes();
  options.first_bucket_bytes = config.first_bucket_bytes();
  options.overlap = config.overlap();
  options.timeout = timeout;
  return options;
}

DistributedSampler sampler_for(const TrainConfig& config, const TrainingData& data, int dp_size, int dp_rank) {
  return DistributedSampler(data.train_task->size(), config.loop().global_batch_size(), dp_size, dp_rank,
                            static_cast<uint64_t>(config.data().seed()), config.loop().micro_batches());
}

WarmupCosine lr_schedule_for(const TrainConfig& config) {
  return WarmupCosine{config.optim().lr(), config.optim().min_lr_ratio(), config.optim().warmup_steps(),
                      config.loop().steps()};
}

ModelSpec model_spec_for(const TrainConfig& config, const TrainingData& data) {
  return model_spec(config.model(), kFashionSide, data.train_task->image_width(), data.tokenizer.vocab_size());
}

Trainer::Trainer(const TrainConfig& config, const Topology& topology, MPI_Comm dp_group, const TrainingData& data)
    : config_(config),
      topology_(topology),
      dp_group_(dp_group),
      data_(data),
      sampler_(sampler_for(config, data, topology.data_parallel, topology.dp_rank())),
      global_sampler_(sampler_for(config, data, 1, 0)),
      schedule_(lr_schedule_for(config)),
      init_timeout_(seconds_to_millis(config.comm().init_timeout_seconds())),
      timeout_(seconds_to_millis(config.comm().timeout_seconds())) {
  torch::manual_seed(static_cast<uint64_t>(config.loop().seed()));
  model_ = VlmModel(model_spec_for(config, data));
  parameters_ = unique_tensors(*model_);
  optimizer_ = make_adamw(*model_, config.optim());
  backend_ = make_backend(backend_kind(config.comm().backend()), torch::kCPU, dp_group_,
                          "dp(stage " + std::to_string(topology.stage()) + ")");
  reducer_ = std::make_unique<GradientReducer>(parameters_, *backend_, reducer_options(config.comm(), init_timeout_));
  reducer_->broadcast_parameters(0, init_timeout_);  // replicas start identical whatever their seeds
}

int64_t caption_targets(const Task& task, const WordTokenizer& tokenizer, const std::vector<int64_t>& indices) {
  int64_t targets = 0;
  for (int64_t index : indices) targets += static_cast<int64_t>(tokenizer.encode(task.sample(index).caption).size()) - 1;
  return targets;
}

StepStats Trainer::train_step() {
  const auto start = Clock::now();
  StepStats stats;
  stats.step = step_;
  const Millis timeout = step_ == 0 ? init_timeout_ : timeout_;
  reducer_->set_timeout(timeout);
  const int64_t micro_batches = config_.loop().micro_batches();
  LossReduction reduction;
  if (backend_->size() > 1) {
    reduction.gather = [this, timeout](const torch::Tensor& rows) { return gather_with_grad(rows, *backend_, timeout); };
  }

  model_->train();
  reducer_->zero_grad();  // gradients are views into the reducer's buckets: zero, never reset
  double losses[3] = {0, 0, 0};
  for (int64_t micro = 0; micro < micro_batches; ++micro) {
    auto t = Clock::now();
    std::vector<Sample> samples;
    for (int64_t index : sampler_.indices(step_, micro)) samples.push_back(data_.train_task->sample(index));
    Batch batch = make_batch(*data_.train_task, data_.tokenizer, samples, model_->spec().max_tokens);

    // Every rank knows the whole global micro-batch: no communication needed for its token count.
    reduction.caption_targets_per_rank =
        static_cast<double>(caption_targets(*data_.train_task, data_.tokenizer, global_sampler_.indices(step_, micro))) /
        backend_->size();
    stats.data_seconds += seconds_since(t);

    t = Clock::now();
    VlmLoss loss = model_->loss(model_->forward(batch.images, batch.tokens, batch.lengths), batch.tokens,
                                WordTokenizer::kPad, reduction);
    stats.forward_seconds += seconds_since(t);

    t = Clock::now();
    reducer_->set_synchronize(micro + 1 == micro_batches);  // reduce once per step (DDP's no_sync)
    (loss.total / static_cast<double>(micro_batches)).backward();
    stats.backward_seconds += seconds_since(t);
    losses[0] += loss.total.item<double>() / micro_batches;
    losses[1] += loss.contrastive.item<double>() / micro_batches;
    losses[2] += loss.caption.item<double>() / micro_batches;
  }
  reducer_->finalize();
  stats.reduction = reducer_->last_stats();

  auto t = Clock::now();
  const double clip = config_.optim().grad_clip_norm();
  stats.grad_norm = torch::nn::utils::clip_grad_norm_(parameters_, clip > 0 ? clip : std::numeric_limits<double>::infinity());
  stats.learning_rate = schedule_.at(step_);
  set_learning_rate(*optimizer_, stats.learning_rate);
  const auto copy_wait = Clock::now();
  checkpoints_.wait_until_copied();  // a save in progress may still be copying the tensors
  stats.checkpoint_wait_seconds = seconds_since(copy_wait);
  optimizer_->step();
  stats.optimizer_seconds = seconds_since(t);

  // Losses for the log: means over the DP group (three doubles, one tiny allreduce).
  torch::Tensor mean = torch::tensor({losses[0], losses[1], losses[2]}, torch::kDouble);
  backend_->allreduce(mean, {ReduceOp::kAvg, timeout})->wait();
  stats.loss = mean[0].item<double>();
  stats.contrastive_loss = mean[1].item<double>();
  stats.caption_loss = mean[2].item<double>();
  stats.global_samples = config_.loop().global_batch_size();
  ++step_;
  stats.seconds = seconds_since(start);
  return stats;
}

}  // namespace vlm
