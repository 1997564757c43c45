// Loading a checkpoint into a model and optimizer, whatever wrote it.

#include "checkpoint/restore.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <cstring>
#include <map>


namespace vlm {

namespace {

int64_t numel_of(const TensorRecord& r) {
  int64_t n = 1;
  for (int64_t d : r.shape()) n *= d;
  return n;
}

// Part of a checkpoint piece, read whole into `from`, that one of our states needs.
struct PieceCopy {
  torch::Tensor from;
  int64_t from_offset = 0;
  torch::Tensor* to = nullptr;
  int64_t to_offset = 0, count = 0;
};

// Each of our optimizer states (a run of a parameter's elements) is filled
// from the checkpoint's pieces of that parameter that overlap it, whatever
// their boundaries: another DP size, ZeRO-1 on one side only, or a format-4
// record holding the whole parameter in its shape. A piece that matches a
// state exactly is read straight into it; the others through a temporary.
// States of parameters the checkpoint has no optimizer records for (an
// exported model) are left as they are.
std::vector<PieceCopy> plan_optimizer_reads(const CheckpointReader& reader, std::vector<AdamState>* optimizer,
                                            std::vector<std::pair<const TensorRecord*, torch::Tensor>>& reads) {
  std::vector<PieceCopy> copies;
  if (optimizer == nullptr) return copies;
  std::map<std::string, std::vector<const OptimizerRecord*>> pieces;
  for (const auto& o : reader.manifest().optimizer()) pieces[o.parameter()].push_back(&o);
  for (AdamState& a : *optimizer) {
    auto it = pieces.find(a.parameter);
    if (it == pieces.end()) continue;
    const int64_t begin = a.start, end = a.start + a.exp_avg.numel();
    int64_t covered = 0;
    for (const OptimizerRecord* o : it->second) {
      const int64_t first = o->start(), last = first + numel_of(o->exp_avg());
      const int64_t lo = std::max(begin, first), hi = std::min(end, last);
      if (lo >= hi) continue;
      covered += hi - lo;
      a.step = o->step();
      const std::vector<int64_t> shape(o->exp_avg().shape().begin(), o->exp_avg().shape().end());
      if (first == begin && last == end) {
        reads.emplace_back(&o->exp_avg(), a.exp_avg.view(shape));
        reads.emplace_back(&o->exp_avg_sq(), a.exp_avg_sq.view(shape));
        continue;
      }
      for (auto [record, to] : {std::make_pair(&o->exp_avg(), &a.exp_avg), std::make_pair(&o->exp_avg_sq(), &a.exp_avg_sq)}) {
        PieceCopy c{torch::empty(shape, torch::kFloat), lo - first, to, lo - begin, hi - lo};
        reads.emplace_back(record, c.from);
        copies.push_back(std::move(c));
      }
    }
    if (covered != end - begin) {
      throw CheckpointError(reader.directory() + ": the optimizer records of '" + a.parameter + "' hold " +
                            std::to_string(covered) + " values for its elements [" + std::to_string(begin) + ", " +
                            std::to_string(end) + "), not " + std::to_string(end - begin) + ": the manifest is damaged");
    }
  }
  return copies;
}

}  // namespace

void check_same_tokenizer(const CheckpointReader& reader, const DataIdentity& now) {
  if (!reader.manifest().has_data()) return;
  const DataIdentity& then = reader.manifest().data();
  const std::string where = reader.directory();
  if (then.tokenizer_crc32c() != now.tokenizer_crc32c() || then.vocab_size() != now.vocab_size()) {
    throw CheckpointMismatch(where + ": the tokenizer differs from the one the checkpoint was trained with (checksum " +
                          std::to_string(then.tokenizer_crc32c()) + ", " + std::to_string(then.vocab_size()) +
                          " tokens; now " + std::to_string(now.tokenizer_crc32c()) + ", " +
                          std::to_string(now.vocab_size()) + " tokens; 0 = the built-in word vocabulary). HINT: "
                          "use the tokenizer the checkpoint was trained with (data.tokenizer_model; for vlm-embed and "
                          "vlm-caption, --tokenizer)");
  }
}

void check_same_data(const CheckpointReader& reader, const DataIdentity& now) {
  check_same_tokenizer(reader, now);
  if (!reader.manifest().has_data()) return;
  const DataIdentity& then = reader.manifest().data();
  const std::string where = reader.directory();
  const bool same_order = (!then.has_seed() || then.seed() == now.seed()) && (!then.has_source() || then.source() == now.source());
  if (!same_order) {
    throw CheckpointMismatch(where + ": the checkpoint's run drew its samples with data.seed " + std::to_string(then.seed()) +
                          " from " + then.source() + "; now data.seed is " + std::to_string(now.seed()) + " from " +
                          now.source() + ": its sample order would not continue. HINT: resume with the run's data.seed and "
                          "data.task (or data.train_shards), or start a new run from its weights with --init-from");
  }
  if (then.samples() != now.samples()) {
    throw CheckpointMismatch(where + ": the checkpoint's run trained on " + std::to_string(then.samples()) +
                          " samples, the data now has " + std::to_string(now.samples()) +
                          ": its sample order would not continue. HINT: resume with the same data.train_shards "
                          "(or data.train_samples), restoring any shard that is missing");
  }
}

void restore_parameters(const CheckpointReader& reader, const ModelConfig& model,
                        const std::vector<UniqueParameter>& parameters, std::vector<AdamState>* optimizer) {
  const Manifest& m = reader.manifest();
  const std::string& where = reader.directory();
  google::protobuf::util::MessageDifferencer differ;
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  if (!differ.Compare(m.config().model(), model)) {
    throw CheckpointMismatch(where + ": the model config differs from the checkpoint's (model.): " + differences +
                          "HINT: use the model config the checkpoint was trained with");
  }
  std::map<std::string, const TensorRecord*> records;
  for (const auto& r : m.tensors()) records[r.name()] = &r;
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> reads;  // checked first, read together
  for (const UniqueParameter& p : parameters) {
    auto it = records.find(p.name);
    if (it == records.end()) throw CheckpointMismatch(where + ": no tensor '" + p.name + "' in the checkpoint");
    const std::vector<std::string> aliases(it->second->aliases().begin(), it->second->aliases().end());
    if (aliases != p.aliases) {
      throw CheckpointMismatch(where + ": the sharing map differs for '" + p.name + "': the checkpoint shares it with " +
                            std::to_string(aliases.size()) + " other layers, the model with " +
                            std::to_string(p.aliases.size()));
    }
    reads.emplace_back(it->second, p.tensor);
  }
  const std::vector<PieceCopy> copies = plan_optimizer_reads(reader, optimizer, reads);
  reader.read_all(reads);
  torch::NoGradGuard no_grad;
  for (const PieceCopy& c : copies) {
    c.to->narrow(0, c.to_offset, c.count).copy_(c.from.reshape({-1}).narrow(0, c.from_offset, c.count));
  }
}

int64_t restore_checkpoint(const CheckpointReader& reader, const TrainConfig& config, int rank,
                           const std::vector<UniqueParameter>& parameters, std::vector<AdamState>* optimizer) {
  restore_parameters(reader, config.model(), parameters, optimizer);
  const Manifest& m = reader.manifest();
  const std::string& where = reader.directory();
  const int64_t global = config.loop().global_batch_size();
  const int64_t trained_with = m.config().loop().global_batch_size();
  if (trained_with != global) {
    throw CheckpointMismatch(where + ": loop.global_batch_size(" + std::to_string(global) + ") differs from the " +
                          std::to_string(trained_with) + " the checkpoint was trained with: its step count, learning-rate "
                          "schedule and data cursor are in those batches. HINT: resume with loop.global_batch_size=" +
                          std::to_string(trained_with) + ", or start a new run from its weights with --init-from");
  }
  if (m.consumed_samples() % global != 0) {
    throw CheckpointMismatch(where + ": " + std::to_string(m.consumed_samples()) +
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

}  // namespace vlm
