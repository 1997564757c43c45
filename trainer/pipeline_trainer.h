#pragma once
// Pipeline-parallel training (with data parallelism inside each stage): this
// rank holds one VlmStage and executes its action list from
// scheduler/pipeline_schedule.h every step. Activations and their gradients
// travel as one flat message per micro-batch and direction, in shapes agreed
// once from the partition (Note [What crosses a stage boundary]). Weights
// shared by blocks on different stages have one copy per stage; their
// gradients are summed over exactly those stages before the optimizer step,
// so the copies never diverge. See docs/pipeline.md.

#include <mpi.h>
#include <torch/torch.h>

#include <map>
#include <memory>

#include "comm/backend.h"
#include "comm/gradient_reducer.h"
#include "comm/process_groups.h"
#include "comm/topology.h"
#include "data/sampler.h"
#include "model/pipeline_stage.h"
#include "scheduler/lr_schedule.h"
#include "scheduler/pipeline_schedule.h"
#include "trainer/checkpoint_writer.h"
#include "trainer/trainer.h"

namespace vlm {

// First block of every stage for `config` (balanced or explicit; errors name the setting).
std::vector<int> stage_starts_for(const TrainConfig& config, const ModelSpec& spec);

class PipelineTrainer {
 public:
  PipelineTrainer(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups,
                  const TrainingData& data);
  ~PipelineTrainer();

  StepStats train_step();

  // Checkpoints as Trainer's: each stage's dp_rank 0 writes the tensors it is
  // the first stage to hold (shard = stage); names are global, so a checkpoint
  // loads into any partition, DP size, or no pipeline at all.
  CheckpointSnapshot snapshot() const;
  void save_checkpoint(const std::string& root, int keep, bool async = false);
  void wait_for_checkpoint() { checkpoints_.wait(); }
  void load_checkpoint(const std::string& step_directory);

  // Collective over the world: the whole model, assembled on world rank 0
  // from every stage's dp_rank 0 (nullptr elsewhere). For evaluation.
  VlmModel gather_model() const;

  int64_t steps_done() const { return step_; }
  VlmStage& stage() { return stage_; }
  const std::vector<int>& stage_starts() const { return starts_; }
  // Communication totals of all this rank's groups (DP, pipeline, tied), by operation.
  std::map<std::string, OperationTotals> communication_totals() const;
  // Canonical names of this stage's tensors that other stages also hold.
  std::vector<std::string> tied_parameter_names() const;
  // Most micro-batches forwarded but not yet backwarded, and the most heap
  // bytes above the step's start, during the last step.
  int peak_in_flight() const { return peak_in_flight_; }
  int64_t peak_activation_bytes() const { return peak_activation_bytes_; }

 private:
  struct MicroBatch;
  struct TiedGroup;
  void load(int micro);
  void forward(int micro);
  void backward(int micro, bool last_backward);
  torch::Tensor pack(const std::vector<torch::Tensor>& tensors) const;
  double clip_gradients(double max_norm, Millis timeout);

  TrainConfig config_;
  Topology topology_;
  const TrainingData& data_;
  std::vector<int> starts_;
  int stages_ = 1;
  int stage_index_ = 0;
  VlmStage stage_{nullptr};
  std::vector<UniqueParameter> parameters_;
  std::vector<torch::Tensor> owned_for_norm_;  // each tensor counted once across stages
  std::vector<UniqueParameter> owned_;         // the same, with names: what this stage checkpoints
  std::unique_ptr<torch::optim::AdamW> optimizer_;  // never zero_grad() it: see trainer.h
  std::unique_ptr<Backend> data_parallel_;
  std::unique_ptr<Backend> pipeline_;
  std::vector<std::unique_ptr<TiedGroup>> tied_;
  std::unique_ptr<GradientReducer> reducer_;
  DistributedSampler sampler_;
  DistributedSampler global_sampler_;
  WarmupCosine schedule_;
  std::vector<Action> actions_;
  std::vector<std::vector<int64_t>> in_shapes_, out_shapes_;  // carry fields received / sent
  std::map<int, MicroBatch> in_flight_;
  std::vector<WorkPtr> sends_;
  Millis init_timeout_, timeout_;
  int64_t step_ = 0;
  int peak_in_flight_ = 0;
  int live_micro_batches_ = 0;  // forwarded, not yet backwarded
  int64_t peak_activation_bytes_ = 0;
  double losses_[2] = {0, 0};  // contrastive, caption: this stage's share of the step
  CheckpointSaver checkpoints_;  // last: destroyed first, after the save in progress
};

}  // namespace vlm
