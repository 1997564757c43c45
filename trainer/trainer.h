#pragma once
// One data-parallel training replica: samples its share of each global batch,
// runs forward/backward per micro-batch while the reducer averages gradient
// buckets over the DP group, then clips and steps AdamW on the warm-up +
// cosine schedule. The contrastive loss sees every rank's features
// (Note [Contrastive gather]), so N ranks train like one process on N x b.

#include <mpi.h>
#include <torch/torch.h>

#include <memory>

#include "comm/backend.h"
#include "comm/gradient_reducer.h"
#include "comm/topology.h"
#include "data/sampler.h"
#include "model/vlm.h"
#include "proto/config.pb.h"
#include "scheduler/lr_schedule.h"
#include "trainer/checkpoint_writer.h"
#include "trainer/training_data.h"

namespace vlm {

// What one optimizer step did; losses are means over DP ranks.
struct StepStats {
  int64_t step = 0;  // 0-based index of the step just taken
  double loss = 0;
  double contrastive_loss = 0;
  double caption_loss = 0;
  double grad_norm = 0;  // before clipping
  double learning_rate = 0;
  double seconds = 0;            // wall time of the whole step
  double data_seconds = 0;       // of which building batches
  double forward_seconds = 0;    // forward passes and losses
  double backward_seconds = 0;   // backward passes (gradient communication overlaps them)
  double optimizer_seconds = 0;  // clipping and the AdamW update
  double checkpoint_wait_seconds = 0;  // of which waiting for an asynchronous save to copy the tensors
  ReductionStats reduction;      // gradient communication: total, exposed, buckets
  double pipeline_busy_seconds = 0;  // forward + backward on this stage (pipeline only; idle share = 1 - busy / seconds)
  double pipeline_seconds = 0;       // step start to this stage's last backward (pipeline only)
  int64_t global_samples = 0;
};

class Trainer {
 public:
  // `dp_group` holds the data-parallel replicas of this rank's stage.
  Trainer(const TrainConfig& config, const Topology& topology, MPI_Comm dp_group, const TrainingData& data);

  StepStats train_step();

  // What a checkpoint holds (parameters and optimizer state on dp_rank 0;
  // every rank's RNG state), referring to the live tensors.
  CheckpointSnapshot snapshot() const;
  // Collective over the world (trainer/checkpoint_writer.h). Asynchronous:
  // returns at once; the tensors are copied on the writer's thread during the
  // next forward and backward, and the next optimizer step waits for the copy.
  void save_checkpoint(const std::string& root, int keep, bool async = false);
  void wait_for_checkpoint() { checkpoints_.wait(); }  // the save in progress is complete (rethrows its failure)
  // Restores parameters, optimizer state, step, data cursor and RNG from a
  // step directory written by a model with the same config and sharing map
  // (any DP size). Every rank reads it.
  void load_checkpoint(const std::string& step_directory);

  int64_t steps_done() const { return step_; }
  VlmModel& model() { return model_; }
  std::map<std::string, OperationTotals> communication_totals() const { return backend_->totals(); }
  std::vector<int64_t> bucket_bytes() const { return reducer_->bucket_bytes(); }

 private:
  TrainConfig config_;
  Topology topology_;
  MPI_Comm dp_group_;
  const TrainingData& data_;
  VlmModel model_{nullptr};
  std::vector<torch::Tensor> parameters_;  // unique
  // Never call optimizer_->zero_grad(): it sets gradients to None (the default
  // in LibTorch 2.x), detaching them from the reducer's buckets; use reducer_->zero_grad().
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<Backend> backend_;          // the DP group's
  std::unique_ptr<GradientReducer> reducer_;
  DistributedSampler sampler_;
  DistributedSampler global_sampler_;  // the whole global batch, for loss normalisation
  WarmupCosine schedule_;
  Millis init_timeout_;  // start-up and the first step
  Millis timeout_;       // every later step
  int64_t step_ = 0;
  CheckpointSaver checkpoints_;  // last: destroyed first, after the save in progress
};

// The model spec the config and the task imply.
ModelSpec model_spec_for(const TrainConfig& config, const TrainingData& data);

// What both trainers build from the config: the sampler of `dp_rank`'s share
// of each global batch (dp_size 1: the whole batch, for loss normalisation),
// and the learning-rate schedule.
DistributedSampler sampler_for(const TrainConfig& config, const TrainingData& data, int dp_size, int dp_rank);
WarmupCosine lr_schedule_for(const TrainConfig& config);

// The comm settings as the comm library takes them.
BackendKind backend_kind(CommConfig::Backend backend);
ReducerOptions reducer_options(const CommConfig& config, Millis timeout);
Millis seconds_to_millis(double seconds);

// Caption targets (tokens after <bos>, through <eos>) of the given samples.
int64_t caption_targets(const Task& task, const WordTokenizer& tokenizer, const std::vector<int64_t>& indices);

}  // namespace vlm
