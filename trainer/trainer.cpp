#include "trainer/trainer.h"

#include <glog/logging.h>
#include <malloc.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "checkpoint/restore.h"
#include "comm/fault_injection.h"
#include "comm/gather_with_grad.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "model/attention_dropout.h"
#include "model/autocast.h"
#include "model/flops.h"
#include "model/kv_cache_layout.h"
#include "model/parameters.h"
#include "trainer/optimizer.h"
#include "trainer/progress.h"
#include "trainer/setup.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int64_t heap_bytes() {
  const struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return shape.empty() ? 0 : n;
}

int64_t message_numel(const std::vector<std::vector<int64_t>>& shapes) {
  int64_t n = 0;
  for (const auto& s : shapes) n += numel(s);
  return n;
}

// Messages are float32 whatever autocast made the activations: the receiver's buffer is.
torch::Tensor pack(const std::vector<torch::Tensor>& tensors, const torch::Device& device) {
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.detach().to(torch::kFloat).reshape({-1}));
  return flat.empty() ? torch::empty({0}, device) : torch::cat(flat);
}

// Splits a flat message into tensors of `shapes` (empty shapes are absent fields).
std::vector<torch::Tensor> unpack(const torch::Tensor& flat, const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<torch::Tensor> out;
  int64_t offset = 0;
  for (const auto& shape : shapes) {
    if (shape.empty()) continue;
    out.push_back(flat.narrow(0, offset, numel(shape)).view(shape));
    offset += numel(shape);
  }
  return out;
}

uint64_t fresh_lineage_id() {
  std::random_device entropy;
  return (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
}

// The model built from the config's seed: every rank builds the same one and
// keeps its stage, so all stages (and all copies of a shared weight) start equal.
VlmModel initial_model(const TrainConfig& config, const TrainingData& data) {
  torch::manual_seed(static_cast<uint64_t>(config.loop().seed()));
  return VlmModel(model_spec_for(config, data));
}

bool is_transfer(ActionKind kind) {
  return kind == ActionKind::kRecvActivation || kind == ActionKind::kSendActivation ||
         kind == ActionKind::kRecvGradient || kind == ActionKind::kSendGradient;
}

}  // namespace

struct Trainer::MicroBatch {
  StageInputs inputs;
  LossReduction reduction;
  std::vector<torch::Tensor> received;          // leaves: activations from the previous stage
  StageOutput output;
  std::vector<torch::Tensor> output_gradients;  // from the next stage
};

// One replica's share of the step (Note [Replicas in one process]). The
// pipeline, and a process of one replica, have replica 0 only.
struct Trainer::Replica {
  int index = 0;
  double model_flops = 0;  // of this step's micro-batches so far, on this stage
  std::unique_ptr<Loader> loader;  // its share of each micro-batch, built ahead
  std::map<int, MicroBatch> in_flight;
  torch::Tensor losses;                  // [contrastive, caption]: its share of the step, float64
  std::vector<torch::Tensor> gradients;  // replicas > 0: of the reducer's parameters, added to replica 0's
};

// Tensors of this stage that other stages also hold, summed over exactly those stages.
struct Trainer::TiedGroup {
  std::vector<torch::Tensor> tensors;
  std::vector<std::string> names;
  std::unique_ptr<Backend> backend;
};

Trainer::Trainer(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups,
                 const TrainingData& data)
    : config_(config),
      topology_(topology),
      data_(data),
      stages_(topology.pipeline_stages),
      stage_index_(topology.stage()),
      device_(groups.device()),
      bf16_(config.device().precision() == DeviceConfig::BF16),
      data_parallel_(groups.data_parallel()),
      pipeline_(groups.pipeline()),
      schedule_(lr_schedule_for(config)),
      init_timeout_(seconds_to_millis(config.comm().init_timeout_seconds())),
      timeout_(seconds_to_millis(config.comm().timeout_seconds())),
      lineage_id_(fresh_lineage_id()),
      checkpoints_(groups.checkpoint(), timeout_) {
  // Each replica of the step is a data-parallel share of its own: K replicas
  // in one process take the shares that K ranks would.
  const int replicas = config.parallel().replicas_per_process();
  if (replicas > 1 && topology.world_size() > 1) {
    throw std::invalid_argument("parallel.replicas_per_process(" + std::to_string(replicas) + ") needs a job of one "
                                "process, not " + std::to_string(topology.world_size()) + " ranks. HINT: with several "
                                "ranks, launch one rank per core instead (docs/performance.md)");
  }
  if (replicas > 1 && !device_.is_cpu()) {
    throw std::invalid_argument("parallel.replicas_per_process(" + std::to_string(replicas) + ") is for CPU "
                                "cores; a GPU runs one replica (set it to 1)");
  }
  const int64_t shares = static_cast<int64_t>(topology.data_parallel) * replicas * config.loop().micro_batches();
  if (replicas > 1 && config.loop().global_batch_size() % shares != 0) {
    throw std::invalid_argument("loop.global_batch_size(" + std::to_string(config.loop().global_batch_size()) +
                                ") must be divisible by parallel.replicas_per_process(" + std::to_string(replicas) +
                                ") x loop.micro_batches(" + std::to_string(config.loop().micro_batches()) + ")");
  }
  LoaderOptions loading = loader_options(config, device_);
  if (loading.threads > 0) loading.threads = std::max(1, loading.threads / replicas);  // shared out
  for (int k = 0; k < replicas; ++k) {
    Replica replica;
    replica.index = k;
    replica.loader = std::make_unique<Loader>(
        *data.train_set, sampler_for(config, data, topology.data_parallel * replicas, topology.dp_rank() * replicas + k),
        sampler_for(config, data, 1, 0), loading);
    replicas_.push_back(std::move(replica));
  }
  if (replicas > 1) replica_threads_ = std::make_unique<ReplicaThreads>(replicas);
  VlmModel full = initial_model(config, data);
  const ModelSpec& spec = full->spec();
  starts_ = stage_starts_for(config, spec);
  starts_.push_back(static_cast<int>(model_blocks(spec)));
  std::map<std::string, std::vector<int>> holders;  // canonical name -> stages holding it
  owned_by_stage_.resize(static_cast<size_t>(stages_));
  for (int s = 0; s < stages_; ++s) {
    VlmStage view(*full, starts_[s], starts_[s + 1]);
    for (const auto& p : view->global_parameters()) {
      if (holders[p.name].empty()) owned_by_stage_[s].push_back(p.name);
      holders[p.name].push_back(s);
    }
  }
  stage_ = VlmStage(*full, starts_[stage_index_], starts_[stage_index_ + 1]);
  stage_->to(device_);  // in place: the tensors keep their identity (and the full model's names)
  parameters_ = stage_->global_parameters();
  std::vector<torch::Tensor> tensors;
  std::vector<bool> tied;  // summed over stages after the DP reduction: needs the whole gradient
  std::set<std::string> owned_names;
  for (const auto& p : parameters_) {
    tensors.push_back(p.tensor);
    tied.push_back(holders[p.name].size() > 1);
    if (holders[p.name].front() == stage_index_) owned_.push_back(p), owned_names.insert(p.name);
  }

  // One group per set of stages sharing tensors; every rank takes part in
  // every split, in the same (sorted) order.
  std::map<std::vector<int>, std::vector<std::string>> by_stages;
  for (const auto& [name, stages] : holders) {
    if (stages.size() > 1) by_stages[stages].push_back(name);
  }
  for (const auto& [stages, names] : by_stages) {
    const bool member = std::find(stages.begin(), stages.end(), stage_index_) != stages.end();
    std::string label = "tied(stages";
    for (int s : stages) label += " " + std::to_string(s);
    label += ", dp_rank " + std::to_string(topology.dp_rank()) + ")";
    auto backend = groups.split(member ? topology.dp_rank() : ProcessGroups::kNotMember, stage_index_, label);
    if (!member) continue;
    auto group = std::make_unique<TiedGroup>();
    group->backend = std::move(backend);
    for (const auto& p : parameters_) {
      if (std::find(names.begin(), names.end(), p.name) != names.end()) {
        group->names.push_back(p.name);
        group->tensors.push_back(p.tensor);
      }
    }
    tied_.push_back(std::move(group));
  }

  ReducerOptions reduction = reducer_options(config.comm(), init_timeout_);
  reduction.shard = config.optim().zero_stage() == 1;
  parameter_tensors_ = tensors;
  reducer_ = std::make_unique<GradientReducer>(tensors, data_parallel_, reduction, tied);
  reducer_->broadcast_parameters(0, init_timeout_);  // replicas start identical whatever their seeds
  // The optimizer updates this rank's segments of the reducer's buckets: all
  // of them, or its shard under ZeRO-1 (Note [ZeRO-1]).
  std::vector<AdamWSegment> segments;
  for (const ShardSegment& s : reducer_->shard_segments()) {
    const UniqueParameter& p = parameters_[s.parameter];
    segments.push_back({p.name, s.start, s.values, s.gradient, p.tensor, decays(p)});
    if (owned_names.count(p.name) != 0) owned_gradients_.push_back(s.gradient);
  }
  optimizer_ = std::make_unique<AdamW>(std::move(segments), config.optim());
  const ScheduleKind schedule =
      config.parallel().schedule() == ParallelConfig::GPIPE ? ScheduleKind::kGPipe : ScheduleKind::kOneFOneB;
  actions_ = pipeline_schedule(schedule, stages_, config.loop().micro_batches(), stage_index_);
}

// The carry entering stage `stage` with micro-batch `micro`, which this rank
// has loaded: its samples and token width are the batch's (without_padding),
// the same on every stage of the pipeline.
std::vector<std::vector<int64_t>> Trainer::carry_into(int64_t stage, int micro) const {
  if (stage == 0 || stage == stages_) return {};
  const torch::Tensor& tokens = replicas_[0].in_flight.at(micro).inputs.tokens;
  return carry_shapes(stage_->spec(), starts_[stage], tokens.size(0), tokens.size(1));
}

Trainer::~Trainer() = default;

CheckpointSnapshot Trainer::snapshot() const {
  // Replicas hold the same values: each stage's dp_rank 0 writes what it
  // owns, and under ZeRO-1 every DP rank its shard of the optimizer state.
  CHECK_EQ(outcome_step_, -1) << "snapshot() before the last step settled (save_checkpoint settles it)";
  const bool writes_parameters = topology_.dp_rank() == 0;
  std::set<std::string> owned;
  for (const auto& p : owned_) owned.insert(p.name);
  std::vector<AdamState> state;
  if (writes_parameters || reducer_->sharded()) {
    for (AdamState& a : optimizer_->state()) {
      if (owned.count(a.parameter) != 0) state.push_back(std::move(a));
    }
  }
  CheckpointSnapshot snap = make_snapshot(step_, config_, topology_,
                                          writes_parameters ? owned_ : std::vector<UniqueParameter>{}, state);
  snap.kv_cache = kv_cache_layout(stage_->spec());
  snap.lineage_id = lineage_id_;
  snap.data = data_identity(data_, config_.data());
  snap.shard = stage_index_ + stages_ * topology_.dp_rank();
  snap.stage_starts.assign(starts_.begin(), starts_.end() - 1);
  return snap;
}

void Trainer::save_checkpoint(const std::string& root, int keep, bool async, const ValidationRecord* validation) {
  settle();  // the optimizer's step count includes the last step
  CheckpointSnapshot snap = snapshot();
  if (validation) snap.validation = *validation, snap.has_validation = true;
  checkpoints_.save(std::move(snap), root, keep, async);
}

void Trainer::init_from(const std::string& checkpoint) {
  const CheckpointReader reader(checkpoint);
  check_same_tokenizer(reader, data_identity(data_, config_.data()));
  restore_parameters(reader, config_.model(), parameters_, nullptr);
}

void Trainer::load_checkpoint(const std::string& step_directory) {
  checkpoints_.wait();  // a save in progress may still be copying the tensors
  const CheckpointReader reader(step_directory);
  if (reader.exported_model()) {
    throw CheckpointMismatch("--resume " + step_directory + " is a model file, which holds weights only: no optimizer "
                             "state, step, or data position to resume. HINT: start a new run from its weights with "
                             "--init-from " + step_directory);
  }
  check_same_data(reader, data_identity(data_, config_.data()));
  std::vector<AdamState> state = optimizer_->state();
  step_ = restore_checkpoint(reader, config_, topology_.rank(), parameters_, &state);
  if (!state.empty()) optimizer_->set_applied_steps(state.front().step);
  // A format-2 checkpoint has no lineage: continuing it starts a new one, so
  // that pruning never takes other runs' format-2 checkpoints for this run's.
  if (reader.manifest().lineage_id() != 0) lineage_id_ = reader.manifest().lineage_id();
}

VlmModel Trainer::whole_model() const {
  // A fresh model draws its initial values from the global generator: keep
  // training's random stream as it was.
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
  const torch::Tensor rng = generator.get_state();
  VlmModel whole(stage_->spec());
  generator.set_state(rng);
  whole->to(device_);
  std::map<std::string, torch::Tensor> by_name;
  for (const auto& p : unique_parameters(*whole)) by_name[p.name] = p.tensor;
  std::map<std::string, torch::Tensor> mine;
  for (const auto& p : owned_) mine[p.name] = p.tensor;
  torch::NoGradGuard no_grad;
  // Each stage's owned tensors, flat, broadcast from that stage (its rank in the pipeline group).
  for (int s = 0; s < stages_; ++s) {
    std::vector<torch::Tensor> parts;
    int64_t total = 0;
    for (const auto& name : owned_by_stage_[s]) {
      total += by_name.at(name).numel();
      if (s == stage_index_) parts.push_back(mine.at(name));
    }
    torch::Tensor flat = s == stage_index_ ? pack(parts, device_) : torch::empty({total}, device_);
    pipeline_.broadcast(flat, {s, timeout_})->wait();
    int64_t offset = 0;
    for (const auto& name : owned_by_stage_[s]) {
      torch::Tensor& target = by_name.at(name);
      target.copy_(flat.narrow(0, offset, target.numel()).view_as(target));
      offset += target.numel();
    }
  }
  return whole;
}

std::map<std::string, OperationTotals> Trainer::communication_totals() const {
  std::map<std::string, OperationTotals> sum;
  auto add = [&sum](const Backend& backend) {
    for (const auto& [op, t] : backend.totals()) {
      sum[op].seconds += t.seconds;
      sum[op].bytes += t.bytes;
      sum[op].count += t.count;
    }
  };
  add(data_parallel_);
  add(pipeline_);
  for (const auto& group : tied_) add(*group->backend);
  return sum;
}

std::vector<std::string> Trainer::tied_parameter_names() const {
  std::vector<std::string> names;
  for (const auto& group : tied_) names.insert(names.end(), group->names.begin(), group->names.end());
  return names;
}

// Training FLOPs per sample of this stage's blocks, for token rows `text_tokens` wide.
double Trainer::stage_flops_per_sample(int64_t text_tokens) const {
  const ModelSpec& spec = stage_->spec();
  const std::vector<double> costs = block_costs(spec, text_tokens);
  const double all = std::accumulate(costs.begin(), costs.end(), 0.0);
  const double mine = std::accumulate(costs.begin() + starts_[stage_index_], costs.begin() + starts_[stage_index_ + 1], 0.0);
  return flops_per_sample(spec, text_tokens).train() * (all > 0 ? mine / all : 1.0);
}

void Trainer::load(Replica& replica, int micro) {
  MicroBatch& mb = replica.in_flight[micro];
  const LoadedBatch loaded = replica.loader->get(step_, micro);
  replica.model_flops += stage_flops_per_sample(loaded.batch.tokens.size(1)) * static_cast<double>(loaded.batch.size());
  const Batch batch = to_device(loaded.batch, device_);
  mb.inputs = {batch.images, batch.tokens, batch.lengths, WordTokenizer::kPad};
  if (stage_->spec().has_dropout()) {  // Note [Keyed dropout]
    const int replicas = static_cast<int>(replicas_.size());
    const std::vector<int64_t> positions =
        global_batch_positions(config_.loop().global_batch_size(), config_.loop().micro_batches(),
                               topology_.data_parallel * replicas, topology_.dp_rank() * replicas + replica.index, micro);
    mb.inputs.dropout_keys = dropout_keys(static_cast<uint64_t>(config_.data().seed()), step_, positions, device_);
  }
  // Every rank knows the whole global micro-batch: no communication needed for its token count.
  mb.reduction.caption_targets_per_rank =
      static_cast<double>(loaded.global.targets) / (topology_.data_parallel * static_cast<double>(replicas_.size()));
  if (replica_threads_) {
    const int k = replica.index;
    mb.reduction.gather = [this, k](const torch::Tensor& rows) { return replica_threads_->gather_rows(k, rows); };
  } else if (data_parallel_.size() > 1) {
    const Millis timeout = step_ == 0 ? init_timeout_ : timeout_;
    mb.reduction.gather = [this, timeout](const torch::Tensor& rows) { return gather_with_grad(rows, data_parallel_, timeout); };
  }
}

void Trainer::forward(Replica& replica, int micro) {
  MicroBatch& mb = replica.in_flight.at(micro);
  StageCarry carry;
  auto fields = carry.fields();
  size_t next = 0;
  const auto in_shapes = carry_into(stage_index_, micro);
  for (size_t f = 0; f < in_shapes.size(); ++f) {
    if (!in_shapes[f].empty()) *fields[f] = mb.received[next++];
  }
  {
    const AutocastGuard autocast(device_, bf16_);  // Note [bf16 autocast]
    mb.output = stage_->forward(carry, mb.inputs, mb.reduction);
  }
  if (inject_nan_loss(step_)) {  // a test hook (comm/fault_injection.h)
    for (torch::Tensor* loss : {&mb.output.contrastive, &mb.output.caption}) {
      if (loss->defined()) *loss = *loss * std::numeric_limits<double>::quiet_NaN();
    }
  }
  const double m = config_.loop().micro_batches();
  // Accumulated on the tensors' device; read once per step.
  torch::Tensor& losses = replica.losses;
  if (mb.output.contrastive.defined()) losses[0] += mb.output.contrastive.detach().to(torch::kDouble) / m;
  if (mb.output.caption.defined()) losses[1] += mb.output.caption.detach().to(torch::kDouble) / m;
  if (replica.index == 0) peak_in_flight_ = std::max(peak_in_flight_, ++live_micro_batches_);
}

void Trainer::backward(Replica& replica, int micro, bool last_backward) {
  MicroBatch& mb = replica.in_flight.at(micro);
  std::vector<torch::Tensor> outputs, gradients;
  size_t next = 0;
  for (torch::Tensor* field : mb.output.carry.fields()) {
    if (!field->defined()) continue;
    const torch::Tensor& gradient = mb.output_gradients.at(next++);
    if (!field->requires_grad()) continue;  // positions of pruned tokens
    outputs.push_back(*field);
    gradients.push_back(gradient);
  }
  const torch::Tensor loss = mb.output.weighted_loss(stage_->spec());
  if (loss.defined()) {
    // The mean over micro-batches, and over replicas as the reducer's over ranks.
    outputs.push_back(loss / static_cast<double>(config_.loop().micro_batches() * replicas_.size()));
    gradients.push_back(torch::ones_like(loss));
  }
  if (replica.index == 0) {
    reducer_->set_synchronize(last_backward && !replica_threads_);  // reduce once per step (DDP's no_sync)
    torch::autograd::backward(outputs, gradients);
    --live_micro_batches_;
  } else {  // apart from replica 0's, which accumulate into the reducer's buckets meanwhile
    std::vector<torch::Tensor> mine = torch::autograd::grad(outputs, parameter_tensors_, gradients, /*retain_graph=*/false,
                                                            /*create_graph=*/false, /*allow_unused=*/true);
    replica.gradients.resize(mine.size());
    for (size_t i = 0; i < mine.size(); ++i) {
      torch::Tensor& sum = replica.gradients[i];
      if (!mine[i].defined()) continue;
      if (sum.defined()) {
        sum.add_(mine[i]);
      } else {  // later micro-batches add to it in place: an expanded view would refuse, so copy one
        sum = mine[i].is_non_overlapping_and_dense() ? mine[i] : mine[i].contiguous();
      }
    }
  }
  mb.output = StageOutput{};  // the graph and activations of this micro-batch are done
}

// A receive lands in a fresh flat tensor, unpacked once it has arrived; a
// send packs its tensors now (the batch keeps the message alive).
Trainer::Transfer Trainer::transfer(const Action& a) {
  const int micro = a.micro_batch;
  switch (a.kind) {
    case ActionKind::kRecvActivation: {
      const auto shapes = carry_into(stage_index_, micro);
      torch::Tensor flat = torch::empty({message_numel(shapes)}, device_);
      return {{false, flat, stage_index_ - 1, 0}, [this, micro, flat, shapes] {
                for (auto& field : unpack(flat, shapes)) replicas_[0].in_flight.at(micro).received.push_back(field.detach().requires_grad_(true));
              }};
    }
    case ActionKind::kRecvGradient: {
      const auto shapes = carry_into(stage_index_ + 1, micro);
      torch::Tensor flat = torch::empty({message_numel(shapes)}, device_);
      return {{false, flat, stage_index_ + 1, 1}, [this, micro, flat, shapes] { replicas_[0].in_flight.at(micro).output_gradients = unpack(flat, shapes); }};
    }
    case ActionKind::kSendActivation: {
      std::vector<torch::Tensor> fields;
      for (torch::Tensor* f : replicas_[0].in_flight.at(micro).output.carry.fields()) {
        if (f->defined()) fields.push_back(*f);
      }
      return {{true, pack(fields, device_), stage_index_ + 1, 0}, nullptr};
    }
    default: {  // kSendGradient: this micro-batch is done on this stage
      std::vector<torch::Tensor> grads;
      for (const torch::Tensor& leaf : replicas_[0].in_flight.at(micro).received) {
        grads.push_back(leaf.grad().defined() ? leaf.grad() : torch::zeros_like(leaf));
      }
      Transfer t{{true, pack(grads, device_), stage_index_ - 1, 1}, nullptr};
      replicas_[0].in_flight.erase(micro);
      return t;
    }
  }
}

// Note [One batch per exchange]: the sends and receives that follow each other
// in the action list (with the loads between them run first) go out as one
// batch. On NCCL a send and a receive between the same two stages must be in
// one group, or in 1F1B both stages send first and wait for each other forever
// once a message exceeds NCCL's buffers. Waits only when it receives.
size_t Trainer::exchange(size_t first, Millis timeout, StepStats& stats) {
  std::vector<PointToPointOp> ops;
  std::vector<std::function<void()>> on_arrival;
  size_t i = first;
  for (; i < actions_.size(); ++i) {
    const Action& a = actions_[i];
    if (a.kind == ActionKind::kLoadMicroBatch) {
      const auto t = Clock::now();
      load(replicas_[0], a.micro_batch);
      stats.data_seconds += seconds_since(t);
      continue;
    }
    if (!is_transfer(a.kind)) break;
    Transfer t = transfer(a);
    ops.push_back(std::move(t.op));
    if (t.arrived) on_arrival.push_back(std::move(t.arrived));
  }
  WorkPtr work = pipeline_.send_recv_batch(ops, timeout);
  if (on_arrival.empty()) {
    sends_.push_back(work);  // waited for at the end of the step
  } else {
    work->wait();
    for (auto& arrived : on_arrival) arrived();
  }
  return i;
}

void Trainer::reduce_tied_gradients(Millis timeout) {
  for (auto& group : tied_) {
    std::vector<torch::Tensor> grads;
    for (const auto& t : group->tensors) grads.push_back(t.grad());
    torch::Tensor flat = pack(grads, device_);
    group->backend->allreduce(flat, {ReduceOp::kSum, timeout})->wait();
    int64_t offset = 0;
    for (const auto& t : group->tensors) {
      t.grad().copy_(flat.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

void Trainer::optimizer_step(StepStats& stats, Millis timeout) {
  // One agreement for the step: the losses (each computed on one stage) and
  // the squared gradient norm (each tensor counted once, on the first stage
  // holding it) summed over the pipeline, then averaged over the DP replicas.
  // Every rank then holds the same values and decides the same way below.
  // Under ZeRO-1 each replica holds a shard of the gradients: the mean over
  // replicas of dp x its shard's share is the sum of the shares.
  std::vector<torch::Tensor> norms;
  for (const auto& g : owned_gradients_) norms.push_back(g.norm(2).to(torch::kDouble));
  torch::Tensor norm_squared = norms.empty() ? torch::zeros({1}, torch::TensorOptions(device_).dtype(torch::kDouble))
                                             : torch::stack(norms).pow(2).sum().view({1});
  if (reducer_->sharded()) norm_squared.mul_(static_cast<double>(data_parallel_.size()));
  // Replicas in this process: their mean, as the DP average below is over ranks.
  torch::Tensor losses = replicas_[0].losses;
  for (size_t k = 1; k < replicas_.size(); ++k) losses = losses + replicas_[k].losses;
  if (replicas_.size() > 1) losses = losses / static_cast<double>(replicas_.size());
  torch::Tensor parts = torch::cat({losses, norm_squared});
  pipeline_.allreduce(parts, {ReduceOp::kSum, timeout})->wait();
  // The norm too: replicas' norms of the same gradients may differ in the
  // last bit (reduction order with other thread counts); the mean is one value.
  data_parallel_.allreduce(parts, {ReduceOp::kAvg, timeout})->wait();
  settle();  // the previous step's outcome: bias correction counts the updates applied
  const ModelSpec& spec = stage_->spec();
  const torch::Tensor loss = spec.contrastive_weight * parts[0] + spec.caption_weight * parts[1];
  const torch::Tensor norm = parts[2].sqrt();
  const torch::Tensor apply = torch::isfinite(loss) & torch::isfinite(norm);  // decided on the device
  torch::Tensor scale;
  const double max_norm = config_.optim().grad_clip_norm();
  if (max_norm > 0) {  // as torch's clip_grad_norm_
    scale = (torch::scalar_tensor(max_norm, norm.options()) / (norm + 1e-6)).clamp_max(1.0).to(torch::kFloat);
  }
  stats.learning_rate = schedule_.at(step_);
  const auto copy_wait = Clock::now();
  checkpoints_.wait_until_copied();  // a save in progress may still be copying the tensors
  stats.checkpoint_wait_seconds = seconds_since(copy_wait);
  optimizer_->step(stats.learning_rate, apply, scale);
  reducer_->gather_parameters(timeout);  // ZeRO-1: every rank's updated shard
  outcome_.start(torch::cat({parts, apply.to(torch::kDouble).view({1})}));
  outcome_step_ = step_;
}

// Note [A step's outcome, a step late]: the host learns whether a step's
// update was applied (and its losses and norm) from a non-blocking copy, when
// it next needs them: at the next optimizer step (bias correction counts the
// updates applied), at a logged step, or before a checkpoint. On the CPU,
// where the copy costs nothing, every step settles at once.
void Trainer::settle() {
  if (outcome_step_ < 0) return;
  const double* v = outcome_.wait();
  const ModelSpec& spec = stage_->spec();
  last_ = {outcome_step_, v[0], v[1], spec.contrastive_weight * v[0] + spec.caption_weight * v[1], std::sqrt(v[2]),
           v[3] != 0};
  outcome_step_ = -1;
  if (last_.applied) {
    optimizer_->count_applied();
    consecutive_skips_ = 0;
    return;
  }
  ++skipped_steps_;
  const int64_t step = last_.step;
  LOG_IF(WARNING, topology_.is_root()) << "step " << step + 1 << ": loss " << last_.loss << ", gradient norm "
                                       << last_.grad_norm << ": not finite; the step is skipped ("
                                       << consecutive_skips_ + 1 << " in a row, loop.max_skipped_steps "
                                       << config_.loop().max_skipped_steps() << ")";
  if (++consecutive_skips_ >= config_.loop().max_skipped_steps()) {
    throw TrainingError("the loss or the gradients were not finite for " + std::to_string(consecutive_skips_) +
                        " consecutive steps (steps " + std::to_string(step + 2 - consecutive_skips_) + ".." +
                        std::to_string(step + 1) + "); stopping. The last checkpoint is intact. HINT: lower "
                        "optim.lr, raise optim.warmup_steps or optim.grad_clip_norm's strictness, or check the data");
  }
}

// Note [Replicas in one process]: each replica runs the one-stage action
// list's loads, forwards and backwards on its own thread. Replica 0's times
// are the step's data, forward and backward times.
void Trainer::run_replicas(StepStats& stats, Millis timeout) {
  StepStats replica0;
  replica_threads_->run(
      [&](int k) {
        Replica& replica = replicas_[static_cast<size_t>(k)];
        replica.gradients.clear();
        for (const Action& a : actions_) {
          const auto t = Clock::now();
          switch (a.kind) {
            case ActionKind::kLoadMicroBatch:
              load(replica, a.micro_batch);
              if (k == 0) replica0.data_seconds += seconds_since(t);
              break;
            case ActionKind::kForward:
              forward(replica, a.micro_batch);
              if (k == 0) replica0.forward_seconds += seconds_since(t);
              if (k == 0) fault_point("step", step_);
              break;
            case ActionKind::kBackward:
              backward(replica, a.micro_batch, false);
              replica.in_flight.erase(a.micro_batch);
              if (k == 0) replica0.backward_seconds += seconds_since(t);
              break;
            default: break;
          }
        }
      },
      timeout);
  // In replica order, so that the sum is the same every time.
  for (size_t k = 1; k < replicas_.size(); ++k) {
    for (size_t i = 0; i < parameters_.size(); ++i) {
      const torch::Tensor& g = replicas_[k].gradients[i];
      if (g.defined()) parameters_[i].tensor.grad().add_(g);
    }
    replicas_[k].gradients.clear();
  }
  reducer_->set_synchronize(true);
  stats.data_seconds += replica0.data_seconds;
  stats.forward_seconds += replica0.forward_seconds;
  stats.backward_seconds += replica0.backward_seconds;
}

StepStats Trainer::train_step() {
  const auto start = Clock::now();
  const Millis timeout = step_ == 0 ? init_timeout_ : timeout_;
  reducer_->set_timeout(timeout);
  StepStats stats;
  stats.step = step_;
  for (Replica& replica : replicas_) replica.losses = torch::zeros({2}, torch::TensorOptions(device_).dtype(torch::kDouble));
  peak_in_flight_ = 0;
  const int64_t heap_at_start = stages_ > 1 ? heap_bytes() : 0;  // activation memory: a pipeline measurement
  peak_activation_bytes_ = 0;
  int backwards_left = config_.loop().micro_batches();
  double busy = 0;
  stage_->train();
  reducer_->zero_grad();  // gradients are views into the reducer's buckets: zero, never reset
  if (replica_threads_) {  // the micro-batches' actions, every replica at once
    const auto t = Clock::now();
    run_replicas(stats, timeout);
    busy = seconds_since(t);
  }
  for (size_t i = 0; i < actions_.size();) {
    const Action& a = actions_[i];
    const bool micro_batch_action =
        a.kind == ActionKind::kLoadMicroBatch || a.kind == ActionKind::kForward || a.kind == ActionKind::kBackward;
    if (replica_threads_ && micro_batch_action) {  // done above
      ++i;
      continue;
    }
    if (is_transfer(a.kind)) {
      i = exchange(i, timeout, stats);
      continue;
    }
    ++i;
    const auto t = Clock::now();
    switch (a.kind) {
      case ActionKind::kLoadMicroBatch:
        load(replicas_[0], a.micro_batch);
        stats.data_seconds += seconds_since(t);
        break;
      case ActionKind::kForward:
        forward(replicas_[0], a.micro_batch);
        busy += seconds_since(t);
        stats.forward_seconds += seconds_since(t);
        fault_point("step", step_);  // a test stops a rank here: mid-step, between collectives
        break;
      case ActionKind::kBackward:
        backward(replicas_[0], a.micro_batch, --backwards_left == 0);
        busy += seconds_since(t);
        stats.backward_seconds += seconds_since(t);
        if (stage_index_ == 0) replicas_[0].in_flight.erase(a.micro_batch);
        stats.pipeline_seconds = seconds_since(start);
        break;
      case ActionKind::kReduceDataParallelGradients:
        reducer_->finalize();
        stats.reduction = reducer_->last_stats();
        break;
      case ActionKind::kReduceTiedGradients: reduce_tied_gradients(timeout); break;
      case ActionKind::kOptimizerStep:
        optimizer_step(stats, timeout);
        stats.optimizer_seconds = seconds_since(t);
        break;
      default: break;  // transfers: exchange() above
    }
    if (stages_ > 1) peak_activation_bytes_ = std::max(peak_activation_bytes_, heap_bytes() - heap_at_start);
  }
  for (auto& w : sends_) w->wait();
  sends_.clear();
  CHECK(replicas_[0].in_flight.empty()) << "micro-batches left over after the step";
  stats.global_samples = config_.loop().global_batch_size();
  stats.rank_samples = stats.global_samples / topology_.data_parallel;
  for (Replica& replica : replicas_) {
    stats.model_flops += replica.model_flops;
    replica.model_flops = 0;
  }
  ++step_;
  if (device_.is_cpu() || is_logged_step(step_, config_.loop().steps(), config_.loop().log_every())) {
    settle();  // on a GPU, the host waits for the step here only
    stats.has_values = true;
    stats.contrastive_loss = last_.contrastive;
    stats.caption_loss = last_.caption;
    stats.loss = last_.loss;
    stats.grad_norm = last_.grad_norm;
    stats.skipped = !last_.applied;
  }
  stats.skipped_steps = skipped_steps_;
  stats.damaged_samples = data_.train_set->damaged();
  stats.seconds = seconds_since(start);
  stats.busy_seconds = busy;
  if (stages_ == 1) stats.pipeline_seconds = 0;
  return stats;
}

}  // namespace vlm
