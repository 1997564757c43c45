// Trainer::save_checkpoint and Trainer::load_checkpoint (format: trainer/checkpoint.h).

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

CheckpointSnapshot Trainer::snapshot() const {
  CheckpointSnapshot snap;
  snap.step = step_;
  snap.consumed_samples = step_ * config_.loop().global_batch_size();
  snap.config = config_;
  snap.topology = topology_;
  snap.kv_cache = kv_cache_layout(model_->spec());
  snap.rng_state = rng_state().clone();
  if (topology_.dp_rank() != 0) return snap;  // replicas hold the same values: one writer
  torch::NoGradGuard no_grad;
  auto& states = optimizer_->state();
  for (const UniqueParameter& p : unique_parameters(*model_)) {
    snap.parameters.push_back({p.name, p.aliases, p.tensor.detach().clone()});
    auto it = states.find(state_key(states, p.tensor));
    if (it == states.end()) continue;  // no step taken yet
    const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    snap.optimizer.push_back({p.name, adam.step(), adam.exp_avg().clone(), adam.exp_avg_sq().clone()});
  }
  return snap;
}

void Trainer::save_checkpoint(const std::string& root, int keep) { write_checkpoint(snapshot(), root, keep, MPI_COMM_WORLD); }

void Trainer::load_checkpoint(const std::string& step_directory) {
  const CheckpointReader reader(step_directory);
  const Manifest& m = reader.manifest();
  google::protobuf::util::MessageDifferencer differ;
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  if (!differ.Compare(m.config().model(), config_.model())) {
    throw CheckpointError(step_directory + ": the model config differs from the checkpoint's (model.): " + differences +
                          "HINT: resume with the config the checkpoint was trained with");
  }
  std::map<std::string, const TensorRecord*> records;
  for (const auto& r : m.tensors()) records[r.name()] = &r;
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> reads;  // checked first, read together
  for (const UniqueParameter& p : unique_parameters(*model_)) {
    auto it = records.find(p.name);
    if (it == records.end()) throw CheckpointError(step_directory + ": no tensor '" + p.name + "' in the checkpoint");
    const std::vector<std::string> aliases(it->second->aliases().begin(), it->second->aliases().end());
    if (aliases != p.aliases) {
      throw CheckpointError(step_directory + ": the sharing map differs for '" + p.name + "': the checkpoint shares it with " +
                            std::to_string(aliases.size()) + " other layers, the model with " +
                            std::to_string(p.aliases.size()));
    }
    reads.emplace_back(it->second, p.tensor);
  }
  std::map<std::string, torch::Tensor> parameters;
  for (const UniqueParameter& p : unique_parameters(*model_)) parameters[p.name] = p.tensor;
  auto& states = optimizer_->state();
  for (const auto& o : m.optimizer()) {
    auto it = parameters.find(o.parameter());
    if (it == parameters.end()) throw CheckpointError(step_directory + ": optimizer state for unknown '" + o.parameter() + "'");
    auto adam = std::make_unique<torch::optim::AdamWParamState>();
    adam->step(o.step());
    torch::Tensor exp_avg = torch::empty_like(it->second), exp_avg_sq = torch::empty_like(it->second);
    reads.emplace_back(&o.exp_avg(), exp_avg);
    reads.emplace_back(&o.exp_avg_sq(), exp_avg_sq);
    adam->exp_avg(exp_avg);
    adam->exp_avg_sq(exp_avg_sq);
    states[state_key(states, it->second)] = std::move(adam);
  }
  reader.read_all(reads);
  const int64_t global = config_.loop().global_batch_size();
  if (m.consumed_samples() % global != 0) {
    throw CheckpointError(step_directory + ": " + std::to_string(m.consumed_samples()) +
                          " consumed samples is not a whole number of loop.global_batch_size(" + std::to_string(global) +
                          ") steps; resume with the global batch size the checkpoint was trained with");
  }
  step_ = m.consumed_samples() / global;  // the data cursor, re-derived for any DP size
  for (const auto& r : m.ranks()) {
    if (r.rank() != topology_.rank()) continue;
    torch::Tensor state = torch::empty({static_cast<int64_t>(r.torch_rng_state().size())}, torch::kByte);
    std::memcpy(state.data_ptr(), r.torch_rng_state().data(), r.torch_rng_state().size());
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
    generator.set_state(state);
  }
}

}  // namespace vlm
