#include "inference/head_scoring.h"

#include <numeric>
#include <random>

#include "checkpoint/crc32c.h"
#include "checkpoint/reader.h"
#include "data/batch.h"
#include "model/kv_cache_layout.h"
#include "model/parameters.h"
#include "trainer/training_data.h"

namespace vlm {

HeadScores score_trained_heads(TrainedModel& trained, int64_t batches, int64_t batch_size, uint64_t seed) {
  const auto data = load_training_data(trained.config.data());
  const TrainSet& set = *data->train_set;
  std::vector<int64_t> order(static_cast<size_t>(set.size()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  const int64_t max_tokens = trained.model->spec().max_tokens;
  std::vector<StageInputs> inputs;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t start = b * batch_size, end = std::min<int64_t>(start + batch_size, set.size());
    if (start >= end) break;
    const Batch batch = without_padding(set.batch({order.begin() + start, order.begin() + end}, 0, max_tokens, false));
    inputs.push_back({batch.images, batch.tokens, batch.lengths, Tokenizer::kPad});
  }
  return score_heads(trained.model, inputs);
}

void export_pruned_model(const std::string& checkpoint, VlmModel& pruned, const ModelConfig& config,
                         const std::string& out_file) {
  const CheckpointReader reader(resolve_checkpoint("", checkpoint));
  Manifest manifest = reader.manifest();
  *manifest.mutable_config()->mutable_model() = config;
  *manifest.mutable_kv_cache() = kv_cache_layout(pruned->spec());
  manifest.clear_tensors();
  std::vector<torch::Tensor> tensors;
  for (const UniqueParameter& p : unique_parameters(*pruned)) {
    const torch::Tensor t = p.tensor.detach().to(torch::kCPU, torch::kFloat).contiguous();
    TensorRecord* record = manifest.add_tensors();
    record->set_name(p.name);
    for (const std::string& alias : p.aliases) record->add_aliases(alias);
    record->set_dtype("float32");
    for (int64_t d : t.sizes()) record->add_shape(d);
    record->set_length(t.nbytes());
    record->set_crc32c(crc32c(t.data_ptr(), t.nbytes()));
    tensors.push_back(t);
  }
  write_model_file(std::move(manifest), tensors, out_file);
}

}  // namespace vlm
