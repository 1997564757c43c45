#include "trainer/setup.h"

#include "data/task.h"
#include "model/pipeline_stage.h"
#include "proto/config_loader.h"
#include "scheduler/stage_partition.h"

namespace vlm {

ModelSpec model_spec_for(const TrainConfig& config, const TrainingData& data) {
  // The task's captions are known before training: one too long for the model fails now, not at some step.
  if (data.train_task) {
    std::string longest;
    int64_t most = 0;
    for (const std::string& caption : task_captions(data.kind)) {
      const int64_t tokens = static_cast<int64_t>(data.tokenizer->encode(caption).size());
      if (tokens > most) most = tokens, longest = caption;
    }
    if (most > config.model().text().max_tokens()) {
      throw ConfigError("model.text.max_tokens(" + std::to_string(config.model().text().max_tokens()) +
                        ") is too short for the task's longest caption '" + longest + "' (" + std::to_string(most) +
                        " tokens). HINT: set --set model.text.max_tokens=" + std::to_string(most) + " or more");
    }
  }
  const ImageFormat& f = data.train_set->format();
  return model_spec(config.model(), f.height, f.width, f.channels, data.tokenizer->vocab_size());
}

DistributedSampler sampler_for(const TrainConfig& config, const TrainingData& data, int dp_size, int dp_rank) {
  return DistributedSampler(data.train_set->size(), config.loop().global_batch_size(), dp_size, dp_rank,
                            static_cast<uint64_t>(config.data().seed()), config.loop().micro_batches());
}

WarmupCosine lr_schedule_for(const TrainConfig& config) {
  return WarmupCosine{config.optim().lr(), config.optim().min_lr_ratio(), config.optim().warmup_steps(),
                      config.loop().steps()};
}

std::vector<int> stage_starts_for(const TrainConfig& config, const ModelSpec& spec) {
  const int stages = config.parallel().pipeline_stages();
  const int blocks = static_cast<int>(model_blocks(spec));
  if (config.parallel().stage_starts_size() > 0) {
    return explicit_partition({config.parallel().stage_starts().begin(), config.parallel().stage_starts().end()},
                              blocks, stages);
  }
  std::vector<bool> cuts;
  if (config.parallel().keep_sharing_groups_together()) cuts = cuts_between_sharing_groups(spec);
  // Fixed before any batch is read: text blocks weigh as if captions took max_tokens.
  return balanced_partition(block_costs(spec, spec.max_tokens), stages, cuts);
}

Millis seconds_to_millis(double seconds) { return Millis(static_cast<int64_t>(seconds * 1000)); }

DeviceRequest device_request(DeviceConfig::Kind kind) {
  switch (kind) {
    case DeviceConfig::CPU: return DeviceRequest::kCpu;
    case DeviceConfig::CUDA: return DeviceRequest::kCuda;
    case DeviceConfig::AUTO: return DeviceRequest::kAuto;
  }
  return DeviceRequest::kAuto;
}

BackendOptions backend_options(const TrainConfig& config, const torch::Device& device) {
  BackendKind kind = BackendKind::kAuto;
  if (config.comm().backend() == CommConfig::MPI) kind = BackendKind::kMpi;
  if (config.comm().backend() == CommConfig::NCCL) kind = BackendKind::kNccl;
  return {kind, device, seconds_to_millis(config.comm().init_timeout_seconds()), config.comm().blocking_wait()};
}

ReducerOptions reducer_options(const CommConfig& config, Millis timeout) {
  ReducerOptions options;
  options.bucket_cap_bytes = config.bucket_cap_bytes();
  options.first_bucket_bytes = config.first_bucket_bytes();
  options.overlap = config.overlap();
  options.timeout = timeout;
  return options;
}

LoaderOptions loader_options(const TrainConfig& config, const torch::Device& device) {
  LoaderOptions options;
  options.threads = config.data().loader_threads();
  options.depth = config.data().prefetch_batches();
  options.micro_batches = config.loop().micro_batches();
  options.max_tokens = config.model().text().max_tokens();
  options.pinned = device.is_cuda();
  return options;
}

}  // namespace vlm
