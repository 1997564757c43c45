#include "trainer/pipeline_trainer.h"

#include <glog/logging.h>
#include <malloc.h>

#include <chrono>
#include <set>
#include <sstream>

#include "comm/gather_with_grad.h"
#include "comm/mpi_check.h"
#include "data/batch.h"
#include "model/parameters.h"
#include "scheduler/stage_partition.h"
#include "trainer/optimizer.h"

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

// MPI counts are ints: large messages go in pieces (same source, tag, order).
constexpr int64_t kMaxPiece = int64_t{1} << 30;

void send_floats(const torch::Tensor& flat, int to, int tag) {
  const auto* data = flat.data_ptr<float>();
  for (int64_t done = 0; done < flat.numel(); done += kMaxPiece) {
    const int n = static_cast<int>(std::min(kMaxPiece, flat.numel() - done));
    VLM_MPI_CHECK(MPI_Send(data + done, n, MPI_FLOAT, to, tag, MPI_COMM_WORLD));
  }
}

void receive_floats(torch::Tensor& flat, int from, int tag) {
  auto* data = flat.data_ptr<float>();
  for (int64_t done = 0; done < flat.numel(); done += kMaxPiece) {
    const int n = static_cast<int>(std::min(kMaxPiece, flat.numel() - done));
    VLM_MPI_CHECK(MPI_Recv(data + done, n, MPI_FLOAT, from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
  }
}

}  // namespace

struct PipelineTrainer::MicroBatch {
  StageInputs inputs;
  LossReduction reduction;
  std::vector<torch::Tensor> received;        // leaves: activations from the previous stage
  StageOutput output;
  std::vector<torch::Tensor> output_gradients;  // from the next stage
};

// Tensors of this stage that other stages also hold, summed over exactly those stages.
struct PipelineTrainer::TiedGroup {
  std::vector<int> stages;
  std::vector<torch::Tensor> tensors;
  std::vector<std::string> names;
  std::unique_ptr<Backend> backend;
};

std::vector<int> stage_starts_for(const TrainConfig& config, const ModelSpec& spec) {
  const int stages = config.parallel().pipeline_stages();
  const int blocks = static_cast<int>(model_blocks(spec));
  if (config.parallel().stage_starts_size() > 0) {
    return explicit_partition({config.parallel().stage_starts().begin(), config.parallel().stage_starts().end()},
                              blocks, stages);
  }
  std::vector<bool> cuts;
  if (config.parallel().keep_sharing_groups_together()) cuts = cuts_between_sharing_groups(spec);
  return balanced_partition(block_costs(spec), stages, cuts);
}

PipelineTrainer::PipelineTrainer(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups,
                                 const TrainingData& data)
    : config_(config),
      topology_(topology),
      data_(data),
      stages_(topology.pipeline_stages),
      stage_index_(topology.stage()),
      sampler_(sampler_for(config, data, topology.data_parallel, topology.dp_rank())),
      global_sampler_(sampler_for(config, data, 1, 0)),
      schedule_(lr_schedule_for(config)),
      init_timeout_(seconds_to_millis(config.comm().init_timeout_seconds())),
      timeout_(seconds_to_millis(config.comm().timeout_seconds())) {
  // Every rank builds the whole model from the same seed and keeps its stage,
  // so all stages (and all copies of a shared weight) start from the same values.
  torch::manual_seed(static_cast<uint64_t>(config.loop().seed()));
  VlmModel full(model_spec_for(config, data));
  const ModelSpec& spec = full->spec();
  starts_ = stage_starts_for(config, spec);
  starts_.push_back(static_cast<int>(model_blocks(spec)));
  std::map<std::string, std::vector<int>> holders;  // canonical name -> stages holding it
  for (int s = 0; s < stages_; ++s) {
    VlmStage view(*full, starts_[s], starts_[s + 1]);
    for (const auto& p : view->global_parameters()) holders[p.name].push_back(s);
  }
  stage_ = VlmStage(*full, starts_[stage_index_], starts_[stage_index_ + 1]);
  parameters_ = stage_->global_parameters();

  std::vector<torch::Tensor> tensors;
  for (const auto& p : parameters_) {
    tensors.push_back(p.tensor);
    if (holders[p.name].front() == stage_index_) owned_for_norm_.push_back(p.tensor), owned_.push_back(p);
  }
  optimizer_ = make_adamw(*stage_, config.optim());
  const BackendKind kind = backend_kind(config.comm().backend());
  data_parallel_ = make_backend(kind, torch::kCPU, groups.data_parallel(), "dp(stage " + std::to_string(stage_index_) + ")");
  pipeline_ = make_backend(kind, torch::kCPU, groups.pipeline(), "pp(dp_rank " + std::to_string(topology.dp_rank()) + ")");

  // One communicator per set of stages sharing tensors; every rank takes part
  // in every split, in the same (sorted) order.
  std::map<std::vector<int>, std::vector<std::string>> by_stages;
  for (const auto& [name, stages] : holders) {
    if (stages.size() > 1) by_stages[stages].push_back(name);
  }
  for (const auto& [stages, names] : by_stages) {
    const bool member = std::find(stages.begin(), stages.end(), stage_index_) != stages.end();
    MPI_Comm comm = MPI_COMM_NULL;
    VLM_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, member ? topology.dp_rank() : MPI_UNDEFINED, stage_index_, &comm));
    if (!member) continue;
    auto group = std::make_unique<TiedGroup>();
    group->stages = stages;
    std::string label = "tied(stages";
    for (int s : stages) label += " " + std::to_string(s);
    group->backend = make_backend(kind, torch::kCPU, comm, label + ")");  // duplicates comm
    VLM_MPI_CHECK(MPI_Comm_free(&comm));
    for (const auto& p : parameters_) {
      if (std::find(names.begin(), names.end(), p.name) != names.end()) {
        group->names.push_back(p.name);
        group->tensors.push_back(p.tensor);
      }
    }
    tied_.push_back(std::move(group));
  }

  reducer_ = std::make_unique<GradientReducer>(tensors, *data_parallel_, reducer_options(config.comm(), init_timeout_));
  reducer_->broadcast_parameters(0, init_timeout_);
  const ScheduleKind schedule =
      config.parallel().schedule() == ParallelConfig::GPIPE ? ScheduleKind::kGPipe : ScheduleKind::kOneFOneB;
  actions_ = pipeline_schedule(schedule, stages_, config.loop().micro_batches(), stage_index_);
  const int64_t batch = config.loop().global_batch_size() / (topology.data_parallel * config.loop().micro_batches());
  if (stage_index_ > 0) in_shapes_ = carry_shapes(spec, starts_[stage_index_], batch);
  if (stage_index_ + 1 < stages_) out_shapes_ = carry_shapes(spec, starts_[stage_index_ + 1], batch);
}

PipelineTrainer::~PipelineTrainer() = default;

CheckpointSnapshot PipelineTrainer::snapshot() const {
  const auto to_write = topology_.dp_rank() == 0 ? owned_ : std::vector<UniqueParameter>{};
  std::vector<int> starts(starts_.begin(), starts_.end() - 1);
  return make_snapshot(step_, config_, topology_, kv_cache_layout(stage_->spec()), to_write, *optimizer_, stage_index_,
                       starts);
}

void PipelineTrainer::save_checkpoint(const std::string& root, int keep, bool async) {
  checkpoints_.save(snapshot(), root, keep, async);
}

void PipelineTrainer::load_checkpoint(const std::string& step_directory) {
  checkpoints_.wait();  // a save in progress may still be copying the tensors
  const CheckpointReader reader(step_directory);
  step_ = restore_checkpoint(reader, config_, topology_.rank(), parameters_, optimizer_.get());
}

VlmModel PipelineTrainer::gather_model() const {
  // Each stage's dp_rank 0 sends the tensors it is the first stage to hold:
  // their names, newline-separated, then their values in that order.
  const int root = 0;
  const bool sender = topology_.dp_rank() == 0 && stage_index_ > 0;
  if (sender) {
    std::string names;
    std::vector<torch::Tensor> values;
    for (const auto& p : owned_) names += p.name + "\n", values.push_back(p.tensor.detach().reshape({-1}));
    VLM_MPI_CHECK(MPI_Send(names.data(), static_cast<int>(names.size()), MPI_CHAR, root, 0, MPI_COMM_WORLD));
    send_floats(values.empty() ? torch::empty({0}) : torch::cat(values), root, 1);
  }
  if (topology_.rank() != root) return VlmModel(nullptr);

  VlmModel whole(stage_->spec());
  std::map<std::string, torch::Tensor> by_name;
  for (const auto& p : unique_parameters(*whole)) by_name[p.name] = p.tensor;
  torch::NoGradGuard no_grad;
  std::set<std::string> filled;
  auto fill = [&](const std::string& name, const torch::Tensor& values) {
    by_name.at(name).copy_(values.view_as(by_name.at(name)));
    filled.insert(name);
  };
  for (const auto& p : owned_) fill(p.name, p.tensor.detach());
  for (int stage = 1; stage < stages_; ++stage) {
    const int from = stage * topology_.data_parallel;  // the stage's dp_rank 0
    MPI_Status status;
    int length = 0;
    VLM_MPI_CHECK(MPI_Probe(from, 0, MPI_COMM_WORLD, &status));
    VLM_MPI_CHECK(MPI_Get_count(&status, MPI_CHAR, &length));
    std::string names(static_cast<size_t>(length), '\0');
    VLM_MPI_CHECK(MPI_Recv(names.data(), length, MPI_CHAR, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    std::vector<std::string> list;
    int64_t numel = 0;
    std::stringstream in(names);
    for (std::string name; std::getline(in, name);) {
      if (!by_name.count(name)) {
        throw std::runtime_error("gather_model: stage " + std::to_string(stage) + " holds '" + name +
                                 "', which the model does not have");
      }
      list.push_back(name);
      numel += by_name.at(name).numel();
    }
    torch::Tensor flat = torch::empty({numel});
    receive_floats(flat, from, 1);
    int64_t offset = 0;
    for (const auto& name : list) {
      fill(name, flat.narrow(0, offset, by_name.at(name).numel()));
      offset += by_name.at(name).numel();
    }
  }
  if (filled.size() != by_name.size()) {
    throw std::runtime_error("gather_model: " + std::to_string(filled.size()) + " of " +
                             std::to_string(by_name.size()) + " tensors arrived; the stages do not cover the model");
  }
  return whole;
}

std::map<std::string, OperationTotals> PipelineTrainer::communication_totals() const {
  std::map<std::string, OperationTotals> sum;
  auto add = [&sum](const Backend& backend) {
    for (const auto& [op, t] : backend.totals()) {
      sum[op].seconds += t.seconds;
      sum[op].bytes += t.bytes;
      sum[op].count += t.count;
    }
  };
  add(*data_parallel_);
  add(*pipeline_);
  for (const auto& group : tied_) add(*group->backend);
  return sum;
}

std::vector<std::string> PipelineTrainer::tied_parameter_names() const {
  std::vector<std::string> names;
  for (const auto& group : tied_) names.insert(names.end(), group->names.begin(), group->names.end());
  return names;
}

torch::Tensor PipelineTrainer::pack(const std::vector<torch::Tensor>& tensors) const {
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.detach().reshape({-1}));
  return torch::cat(flat);
}

// Splits a flat message into fresh tensors of `shapes` (empty shapes are absent fields).
static std::vector<torch::Tensor> unpack(const torch::Tensor& flat, const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<torch::Tensor> out;
  int64_t offset = 0;
  for (const auto& shape : shapes) {
    if (shape.empty()) continue;
    out.push_back(flat.narrow(0, offset, numel(shape)).view(shape));
    offset += numel(shape);
  }
  return out;
}

static int64_t message_numel(const std::vector<std::vector<int64_t>>& shapes) {
  int64_t n = 0;
  for (const auto& s : shapes) n += numel(s);
  return n;
}

void PipelineTrainer::load(int micro) {
  MicroBatch& mb = in_flight_[micro];
  std::vector<Sample> samples;
  for (int64_t index : sampler_.indices(step_, micro)) samples.push_back(data_.train_task->sample(index));
  Batch batch = make_batch(*data_.train_task, data_.tokenizer, samples, stage_->spec().max_tokens);
  mb.inputs = {batch.images, batch.tokens, batch.lengths, WordTokenizer::kPad};
  mb.reduction.caption_targets_per_rank =
      static_cast<double>(caption_targets(*data_.train_task, data_.tokenizer, global_sampler_.indices(step_, micro))) /
      topology_.data_parallel;
  if (data_parallel_->size() > 1) {
    const Millis timeout = step_ == 0 ? init_timeout_ : timeout_;
    mb.reduction.gather = [this, timeout](const torch::Tensor& rows) { return gather_with_grad(rows, *data_parallel_, timeout); };
  }
}

void PipelineTrainer::forward(int micro) {
  MicroBatch& mb = in_flight_.at(micro);
  StageCarry carry;
  auto fields = carry.fields();
  size_t next = 0;
  for (size_t f = 0; f < in_shapes_.size(); ++f) {
    if (!in_shapes_[f].empty()) *fields[f] = mb.received[next++];
  }
  mb.output = stage_->forward(carry, mb.inputs, mb.reduction);
  const int m = config_.loop().micro_batches();
  if (mb.output.contrastive.defined()) losses_[0] += mb.output.contrastive.item<double>() / m;
  if (mb.output.caption.defined()) losses_[1] += mb.output.caption.item<double>() / m;
  peak_in_flight_ = std::max(peak_in_flight_, ++live_micro_batches_);
}

void PipelineTrainer::backward(int micro, bool last_backward) {
  MicroBatch& mb = in_flight_.at(micro);
  const ModelSpec& spec = stage_->spec();
  const double m = config_.loop().micro_batches();
  std::vector<torch::Tensor> outputs, gradients;
  size_t next = 0;
  for (torch::Tensor* field : mb.output.carry.fields()) {
    if (!field->defined()) continue;
    outputs.push_back(*field);
    gradients.push_back(mb.output_gradients.at(next++));
  }
  torch::Tensor loss;
  if (mb.output.contrastive.defined()) loss = spec.contrastive_weight * mb.output.contrastive / m;
  if (mb.output.caption.defined()) {
    torch::Tensor caption = spec.caption_weight * mb.output.caption / m;
    loss = loss.defined() ? loss + caption : caption;
  }
  if (loss.defined()) {
    outputs.push_back(loss);
    gradients.push_back(torch::ones_like(loss));
  }
  reducer_->set_synchronize(last_backward);
  torch::autograd::backward(outputs, gradients);
  mb.output = StageOutput{};  // the graph and activations of this micro-batch are done
  --live_micro_batches_;
}

double PipelineTrainer::clip_gradients(double max_norm, Millis timeout) {
  // Global L2 norm over the whole model: each tensor counted once, on the first stage holding it.
  double sum = 0;
  for (const auto& t : owned_for_norm_) sum += t.grad().pow(2).sum().item<double>();
  torch::Tensor total = torch::tensor({sum}, torch::kDouble);
  pipeline_->allreduce(total, {ReduceOp::kSum, timeout})->wait();
  const double norm = std::sqrt(total.item<double>());
  if (max_norm > 0) {
    const double coefficient = std::min(1.0, max_norm / (norm + 1e-6));  // as torch's clip_grad_norm_
    for (const auto& p : parameters_) p.tensor.grad().mul_(coefficient);
  }
  return norm;
}

StepStats PipelineTrainer::train_step() {
  const auto start = Clock::now();
  const Millis timeout = step_ == 0 ? init_timeout_ : timeout_;
  reducer_->set_timeout(timeout);
  StepStats stats;
  stats.step = step_;
  losses_[0] = losses_[1] = 0;
  peak_in_flight_ = 0;
  const int64_t heap_at_start = heap_bytes();
  peak_activation_bytes_ = 0;
  int backwards_left = config_.loop().micro_batches();
  double busy = 0;
  stage_->train();
  reducer_->zero_grad();
  for (const Action& a : actions_) {
    const auto t = Clock::now();
    switch (a.kind) {
      case ActionKind::kLoadMicroBatch: load(a.micro_batch); break;
      case ActionKind::kRecvActivation: {
        torch::Tensor flat = torch::empty({message_numel(in_shapes_)});
        pipeline_->recv(flat, stage_index_ - 1, {0, timeout})->wait();
        for (auto& field : unpack(flat, in_shapes_)) in_flight_.at(a.micro_batch).received.push_back(field.detach().requires_grad_(true));
        break;
      }
      case ActionKind::kForward:
        forward(a.micro_batch);
        busy += seconds_since(t);
        stats.forward_seconds += seconds_since(t);
        break;
      case ActionKind::kSendActivation: {
        std::vector<torch::Tensor> fields;
        for (torch::Tensor* f : in_flight_.at(a.micro_batch).output.carry.fields()) if (f->defined()) fields.push_back(*f);
        sends_.push_back(pipeline_->send(pack(fields), stage_index_ + 1, {0, timeout}));
        break;
      }
      case ActionKind::kRecvGradient: {
        torch::Tensor flat = torch::empty({message_numel(out_shapes_)});
        pipeline_->recv(flat, stage_index_ + 1, {1, timeout})->wait();
        in_flight_.at(a.micro_batch).output_gradients = unpack(flat, out_shapes_);
        break;
      }
      case ActionKind::kBackward:
        backward(a.micro_batch, --backwards_left == 0);
        busy += seconds_since(t);
        stats.backward_seconds += seconds_since(t);
        if (stage_index_ == 0) in_flight_.erase(a.micro_batch);
        stats.pipeline_seconds = seconds_since(start);
        break;
      case ActionKind::kSendGradient: {
        std::vector<torch::Tensor> grads;
        for (const torch::Tensor& leaf : in_flight_.at(a.micro_batch).received) {
          grads.push_back(leaf.grad().defined() ? leaf.grad() : torch::zeros_like(leaf));
        }
        sends_.push_back(pipeline_->send(pack(grads), stage_index_ - 1, {1, timeout}));
        in_flight_.erase(a.micro_batch);
        break;
      }
      case ActionKind::kReduceDataParallelGradients:
        reducer_->finalize();
        stats.reduction = reducer_->last_stats();
        break;
      case ActionKind::kReduceTiedGradients:
        for (auto& group : tied_) {
          std::vector<torch::Tensor> grads;
          for (const auto& t : group->tensors) grads.push_back(t.grad());
          torch::Tensor flat = pack(grads);
          group->backend->allreduce(flat, {ReduceOp::kSum, timeout})->wait();
          int64_t offset = 0;
          for (const auto& t : group->tensors) {
            t.grad().copy_(flat.narrow(0, offset, t.numel()).view_as(t));
            offset += t.numel();
          }
        }
        break;
      case ActionKind::kOptimizerStep:
        stats.grad_norm = clip_gradients(config_.optim().grad_clip_norm(), timeout);
        stats.learning_rate = schedule_.at(step_);
        set_learning_rate(*optimizer_, stats.learning_rate);
        const auto copy_wait = Clock::now();
        checkpoints_.wait_until_copied();  // a save in progress may still be copying the tensors
        stats.checkpoint_wait_seconds = seconds_since(copy_wait);
        optimizer_->step();
        stats.optimizer_seconds = seconds_since(t);
        break;
    }
    peak_activation_bytes_ = std::max(peak_activation_bytes_, heap_bytes() - heap_at_start);
  }
  for (auto& w : sends_) w->wait();
  sends_.clear();
  CHECK(in_flight_.empty()) << "micro-batches left over after the step";

  // Losses: the stage that computed each part contributes it; means over DP replicas.
  torch::Tensor parts = torch::tensor({losses_[0], losses_[1]}, torch::kDouble);
  pipeline_->allreduce(parts, {ReduceOp::kSum, timeout})->wait();
  data_parallel_->allreduce(parts, {ReduceOp::kAvg, timeout})->wait();
  const ModelSpec& spec = stage_->spec();
  stats.contrastive_loss = parts[0].item<double>();
  stats.caption_loss = parts[1].item<double>();
  stats.loss = spec.contrastive_weight * stats.contrastive_loss + spec.caption_weight * stats.caption_loss;
  stats.global_samples = config_.loop().global_batch_size();
  ++step_;
  stats.seconds = seconds_since(start);
  stats.pipeline_busy_seconds = busy;
  return stats;
}

}  // namespace vlm
