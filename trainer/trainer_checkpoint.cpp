// Trainer's checkpoint entry points, and the snapshot/restore core both
// trainers share (trainer/checkpoint_writer.h).

#include <google/protobuf/util/message_differencer.h>

#include <type_traits>

#include "comm/mpi_check.h"
#include "model/parameters.h"
#include "trainer/checkpoint.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

// LibTorch 1.13 keys optimizer state by the TensorImpl's address as a string,
// 2.x by the address itself.
template <typename StateMap>
auto state_key(const StateMap&, const torch::Tensor& p) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    return c10::guts::to_string(p.unsafeGetTensorImpl());
  } else {
    return static_cast<typename StateMap::key_type>(p.unsafeGetTensorImpl());
  }
}

torch::Tensor rng_state() { return at::detail::getDefaultCPUGenerator().get_state(); }

}  // namespace

CheckpointSnapshot make_snapshot(int64_t step, const TrainConfig& config, const Topology& topology,
                                 const KvCacheLayout& kv_cache, const std::vector<UniqueParameter>& to_write,
                                 torch::optim::Optimizer& optimizer, int shard, std::vector<int> stage_starts) {
  CheckpointSnapshot snap;
  snap.step = step;
  snap.consumed_samples = step * config.loop().global_batch_size();
  snap.config = config;
  snap.topology = topology;
  snap.kv_cache = kv_cache;
  snap.rng_state = rng_state().clone();
  snap.shard = shard;
  snap.stage_starts = std::move(stage_starts);
  // The live tensors; only what is not contiguous host memory (a GPU's) is copied now.
  auto host = [](const torch::Tensor& t) {
    const torch::Tensor d = t.detach();
    return d.device().is_cpu() && d.is_contiguous() ? d : d.to(torch::kCPU).contiguous();
  };
  auto& states = optimizer.state();
  for (const UniqueParameter& p : to_write) {
    snap.parameters.push_back({p.name, p.aliases, host(p.tensor)});
    auto it = states.find(state_key(states, p.tensor));
    if (it == states.end()) continue;  // no step taken yet
    const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    snap.optimizer.push_back({p.name, adam.step(), host(adam.exp_avg()), host(adam.exp_avg_sq())});
  }
  return snap;
}

int64_t restore_checkpoint(const CheckpointReader& reader, const TrainConfig& config, int rank,
                           const std::vector<UniqueParameter>& parameters, torch::optim::Optimizer* optimizer) {
  const Manifest& m = reader.manifest();
  const std::string& where = reader.directory();
  google::protobuf::util::MessageDifferencer differ;
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  if (!differ.Compare(m.config().model(), config.model())) {
    throw CheckpointError(where + ": the model config differs from the checkpoint's (model.): " + differences +
                          "HINT: resume with the config the checkpoint was trained with");
  }
  std::map<std::string, const TensorRecord*> records;
  for (const auto& r : m.tensors()) records[r.name()] = &r;
  std::map<std::string, const OptimizerRecord*> adam_records;
  for (const auto& o : m.optimizer()) adam_records[o.parameter()] = &o;
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> reads;  // checked first, read together
  for (const UniqueParameter& p : parameters) {
    auto it = records.find(p.name);
    if (it == records.end()) throw CheckpointError(where + ": no tensor '" + p.name + "' in the checkpoint");
    const std::vector<std::string> aliases(it->second->aliases().begin(), it->second->aliases().end());
    if (aliases != p.aliases) {
      throw CheckpointError(where + ": the sharing map differs for '" + p.name + "': the checkpoint shares it with " +
                            std::to_string(aliases.size()) + " other layers, the model with " +
                            std::to_string(p.aliases.size()));
    }
    reads.emplace_back(it->second, p.tensor);
    auto adam_record = adam_records.find(p.name);
    if (optimizer == nullptr || adam_record == adam_records.end()) continue;
    auto& state = optimizer->state()[state_key(optimizer->state(), p.tensor)];
    if (state == nullptr) {  // a fresh optimizer: allocate the state (a running one is loaded in place)
      state = std::make_unique<torch::optim::AdamWParamState>();
      auto& adam = static_cast<torch::optim::AdamWParamState&>(*state);
      adam.exp_avg(torch::empty_like(p.tensor, torch::MemoryFormat::Contiguous));
      adam.exp_avg_sq(torch::empty_like(p.tensor, torch::MemoryFormat::Contiguous));
    }
    auto& adam = static_cast<torch::optim::AdamWParamState&>(*state);
    adam.step(adam_record->second->step());
    reads.emplace_back(&adam_record->second->exp_avg(), adam.exp_avg());
    reads.emplace_back(&adam_record->second->exp_avg_sq(), adam.exp_avg_sq());
  }
  reader.read_all(reads);
  const int64_t global = config.loop().global_batch_size();
  if (m.consumed_samples() % global != 0) {
    throw CheckpointError(where + ": " + std::to_string(m.consumed_samples()) +
                          " consumed samples is not a whole number of loop.global_batch_size(" + std::to_string(global) +
                          ") steps; resume with the global batch size the checkpoint was trained with");
  }
  for (const auto& r : m.ranks()) {
    if (r.rank() != rank) continue;
    torch::Tensor state = torch::empty({static_cast<int64_t>(r.torch_rng_state().size())}, torch::kByte);
    std::memcpy(state.data_ptr(), r.torch_rng_state().data(), r.torch_rng_state().size());
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
    generator.set_state(state);
  }
  return m.consumed_samples() / global;  // the data cursor, re-derived for any DP size or partition
}

CheckpointSnapshot Trainer::snapshot() const {
  // Replicas hold the same values: dp_rank 0 writes them.
  const auto to_write = topology_.dp_rank() == 0 ? unique_parameters(*model_) : std::vector<UniqueParameter>{};
  return make_snapshot(step_, config_, topology_, kv_cache_layout(model_->spec()), to_write, *optimizer_, 0, {0});
}

void Trainer::save_checkpoint(const std::string& root, int keep, bool async) {
  checkpoints_.save(snapshot(), root, keep, async);
}

void Trainer::load_checkpoint(const std::string& step_directory) {
  checkpoints_.wait();  // a save in progress may still be copying the tensors
  const CheckpointReader reader(step_directory);
  step_ = restore_checkpoint(reader, config_, topology_.rank(), unique_parameters(*model_), optimizer_.get());
}

}  // namespace vlm
