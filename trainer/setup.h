#pragma once
// What the trainer (and the tests' reference loop) build from the config.

#include <chrono>
#include <vector>

#include "comm/backend.h"
#include "comm/device.h"
#include "comm/gradient_reducer.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "model/spec.h"
#include "proto/config.pb.h"
#include "scheduler/lr_schedule.h"
#include "trainer/training_data.h"

namespace vlm {

// The model spec the config and the task imply.
ModelSpec model_spec_for(const TrainConfig& config, const TrainingData& data);

// The sampler of `dp_rank`'s share of each global batch (dp_size 1: the whole
// batch, for loss normalisation).
DistributedSampler sampler_for(const TrainConfig& config, const TrainingData& data, int dp_size, int dp_rank);
WarmupCosine lr_schedule_for(const TrainConfig& config);

// First block of every pipeline stage (balanced or explicit; errors name the setting).
std::vector<int> stage_starts_for(const TrainConfig& config, const ModelSpec& spec);

// The device and comm settings as the comm library takes them.
DeviceRequest device_request(DeviceConfig::Kind kind);
BackendOptions backend_options(const TrainConfig& config, const torch::Device& device);
ReducerOptions reducer_options(const CommConfig& config, Millis timeout);
Millis seconds_to_millis(double seconds);

// The loader settings (data.loader_threads, data.prefetch_batches, ...).
LoaderOptions loader_options(const TrainConfig& config, const torch::Device& device);

}  // namespace vlm
