#pragma once
// Note [One trainer]: one trainer for every layout. This rank holds one
// pipeline stage (model/pipeline_stage.h) and runs its action list from
// scheduler/pipeline_schedule.h every step; a single process, or pure data
// parallelism, holds the stage of all blocks and runs the one-stage list,
// which is exactly a micro-batched forward/backward. So there is one forward
// pass, one loss bookkeeping, one gradient clipping, one optimizer step and
// one checkpoint path for every layout.
//
// A step: each micro-batch is loaded, run forward (receiving the previous
// stage's activations, sending ours on), and backward (receiving the next
// stage's gradients, sending ours back); the gradient reducer averages the
// stage's gradients over its DP replicas in buckets while backward runs;
// weights held by several stages have their gradients summed over exactly
// those stages; the global gradient norm and the losses are agreed; a step
// with a non-finite loss or norm is skipped; otherwise gradients are clipped
// and AdamW steps on the warm-up + cosine schedule. The contrastive loss sees
// every DP rank's features (Note [Contrastive gather]), so N ranks train like
// one process on N x b. See docs/training.md and docs/pipeline.md.

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint/saver.h"
#include "comm/backend.h"
#include "comm/gradient_reducer.h"
#include "comm/process_groups.h"
#include "comm/topology.h"
#include "data/loader.h"
#include "model/pipeline_stage.h"
#include "proto/config.pb.h"
#include "scheduler/lr_schedule.h"
#include "scheduler/pipeline_schedule.h"
#include "trainer/host_readback.h"
#include "trainer/optimizer.h"
#include "trainer/replica_threads.h"
#include "trainer/training_data.h"

namespace vlm {

// Training cannot go on (non-finite losses for too long).
class TrainingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What one optimizer step did; losses are means over DP ranks.
struct StepStats {
  int64_t step = 0;  // 0-based index of the step just taken
  double loss = 0;
  double contrastive_loss = 0;
  double caption_loss = 0;
  double grad_norm = 0;  // before clipping
  double learning_rate = 0;
  bool skipped = false;              // loss or gradient norm not finite: no update
  // Whether the five fields above were read back: every step on the CPU, on
  // a GPU at logged steps only (Note [A step's outcome, a step late]).
  bool has_values = false;
  int64_t skipped_steps = 0;         // so far, as known now (on a GPU, possibly not this step yet)
  int64_t damaged_samples = 0;       // found in the data so far, by this rank, and skipped (docs/data.md)
  double seconds = 0;                // wall time of the whole step
  double data_seconds = 0;           // of which building batches
  double forward_seconds = 0;        // forward passes and losses
  double backward_seconds = 0;       // backward passes (gradient communication overlaps them)
  double optimizer_seconds = 0;      // agreeing on norm and losses, clipping, the AdamW update
  double checkpoint_wait_seconds = 0;  // of which waiting for an asynchronous save to copy the tensors
  ReductionStats reduction;          // gradient communication: total, exposed, buckets
  double busy_seconds = 0;           // forward + backward on this rank: compute without waiting (pipeline idle share = 1 - busy / seconds)
  double pipeline_seconds = 0;       // step start to this stage's last backward (pipeline only)
  int64_t global_samples = 0;        // the step's samples over all DP replicas
  int64_t rank_samples = 0;          // of which this rank's replica trained on
  double model_flops = 0;            // training FLOPs this rank's stage did (model/flops.h), for MFU
};

class Trainer {
 public:
  // Collective over the world (the groups' split for shared weights).
  Trainer(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups, const TrainingData& data);
  ~Trainer();

  StepStats train_step();

  // Checkpoints: each stage's dp_rank 0 writes the tensors it is the first
  // stage to hold (shard = stage); names are global, so a checkpoint loads
  // into any partition, DP size, or one process.
  CheckpointSnapshot snapshot() const;
  // Collective over the world. Asynchronous: returns at once; the tensors are
  // copied on the writer's thread during the next forward and backward, and
  // the next optimizer step waits for the copy.
  // `validation`: this step's, recorded in the manifest (and ROOT/best names
  // the checkpoint when it is the best so far).
  void save_checkpoint(const std::string& root, int keep, bool async = false,
                       const ValidationRecord* validation = nullptr);
  void wait_for_checkpoint() { checkpoints_.wait(); }  // the save in progress is complete (rethrows its failure)
  // Restores parameters, optimizer state, step, data cursor, RNG and lineage
  // from a step directory written by a model with the same config and sharing
  // map (any DP size or partition). Every rank reads it.
  void load_checkpoint(const std::string& step_directory);
  // A new run from a checkpoint's or an exported model's weights (--init-from):
  // parameters only; the optimizer, step, data cursor and lineage start fresh.
  // The model config and the tokenizer must be the checkpoint's.
  void init_from(const std::string& checkpoint);

  // Collective over the pipeline group: the whole model, on every rank (evaluation).
  VlmModel whole_model() const;

  int64_t steps_done() const { return step_; }
  VlmStage& stage() { return stage_; }
  const std::vector<int>& stage_starts() const { return starts_; }
  // Communication totals of all this rank's groups (DP, pipeline, tied), by operation.
  std::map<std::string, OperationTotals> communication_totals() const;
  // Canonical names of this stage's tensors that other stages also hold.
  std::vector<std::string> tied_parameter_names() const;
  std::vector<int64_t> bucket_bytes() const { return reducer_->bucket_bytes(); }
  // Most micro-batches forwarded but not yet backwarded, and (with stages)
  // the most heap bytes above the step's start, during the last step.
  int peak_in_flight() const { return peak_in_flight_; }
  int64_t peak_activation_bytes() const { return peak_activation_bytes_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  // AdamW's moments held by this rank: 1/dp of the stage's under ZeRO-1.
  int64_t optimizer_state_bytes() const { return optimizer_->state_bytes(); }

 private:
  struct MicroBatch;
  struct Replica;
  struct TiedGroup;
  void load(Replica& replica, int micro);
  void forward(Replica& replica, int micro);
  void backward(Replica& replica, int micro, bool last_backward);
  // Note [Replicas in one process]: every replica's micro-batches at once.
  void run_replicas(StepStats& stats, Millis timeout);
  // One send or receive, and what to do once it has arrived (receives only).
  struct Transfer {
    PointToPointOp op;
    std::function<void()> arrived;
  };
  Transfer transfer(const Action& a);
  std::vector<std::vector<int64_t>> carry_into(int64_t stage, int micro) const;
  double stage_flops_per_sample(int64_t text_tokens) const;
  // Issues the run of transfers starting at actions_[first] as one batch;
  // returns the index of the first action after it.
  size_t exchange(size_t first, Millis timeout, StepStats& stats);
  void reduce_tied_gradients(Millis timeout);
  void optimizer_step(StepStats& stats, Millis timeout);
  void settle();

  TrainConfig config_;
  Topology topology_;
  const TrainingData& data_;
  std::vector<int> starts_;  // first block of each stage, then the number of blocks
  int stages_ = 1;
  int stage_index_ = 0;
  torch::Device device_;  // of the parameters, optimizer state, batches and messages
  bool bf16_ = false;     // device.precision BF16: forward under autocast
  VlmStage stage_{nullptr};
  std::vector<UniqueParameter> parameters_;    // this stage's
  std::vector<torch::Tensor> parameter_tensors_;  // their tensors, in the same order (autograd::grad's inputs)
  std::vector<UniqueParameter> owned_;         // those no earlier stage holds: counted once in norms, checkpointed here
  std::vector<torch::Tensor> owned_gradients_;  // their averaged gradients this rank updates (its shard under ZeRO-1)
  std::vector<std::vector<std::string>> owned_by_stage_;  // every stage's owned names, for whole_model()
  // Never call optimizer_->zero_grad(): it sets gradients to None (the default
  // in LibTorch 2.x), detaching them from the reducer's buckets; use reducer_->zero_grad().
  std::unique_ptr<AdamW> optimizer_;
  Backend& data_parallel_;
  Backend& pipeline_;
  std::vector<std::unique_ptr<TiedGroup>> tied_;
  std::unique_ptr<GradientReducer> reducer_;
  // The step's replicas in this process: one, or parallel.replicas_per_process.
  std::vector<Replica> replicas_;
  std::unique_ptr<ReplicaThreads> replica_threads_;  // with more than one replica
  WarmupCosine schedule_;
  std::vector<Action> actions_;
  std::vector<WorkPtr> sends_;
  Millis init_timeout_;  // start-up and the first step
  Millis timeout_;       // every later step
  int64_t step_ = 0;
  uint64_t lineage_id_ = 0;  // Manifest.lineage_id: drawn fresh, or the resumed checkpoint's
  int64_t skipped_steps_ = 0;
  int consecutive_skips_ = 0;
  int peak_in_flight_ = 0;
  int live_micro_batches_ = 0;  // forwarded, not yet backwarded (replica 0's)
  int64_t peak_activation_bytes_ = 0;
  // The last optimizer step's agreed [contrastive, caption, norm², applied],
  // on its way to the host, and which step that is (-1: none in flight).
  HostReadback outcome_{device_, 4};
  int64_t outcome_step_ = -1;
  struct Outcome {
    int64_t step = -1;
    double contrastive = 0, caption = 0, loss = 0, grad_norm = 0;
    bool applied = true;
  };
  Outcome last_;  // the last step settled
  CheckpointSaver checkpoints_;  // last: destroyed first, after the save in progress
};

}  // namespace vlm
