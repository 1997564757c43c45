#pragma once
// Head importance and head pruning of a trained model (model/head_pruning.h):
// what vlm-heads and vlm-head-bench share.

#include <string>

#include "inference/trained_model.h"
#include "model/head_pruning.h"

namespace vlm {

// Scores the heads of `trained` (Note [Head sensitivity]) on `batches`
// batches of `batch_size` samples of its run's training set: the first
// samples of a permutation seeded by `seed`, so the held-out data that
// measures a pruned model is not the data that chose what to prune.
HeadScores score_trained_heads(TrainedModel& trained, int64_t batches, int64_t batch_size, uint64_t seed = 0);

// `pruned` (with the model config `config`, from prune_heads) as a model file
// like `vlm-ckpt export` writes: the manifest of `checkpoint`, where the model
// came from, with the new config, KV-cache layout and tensors.
void export_pruned_model(const std::string& checkpoint, VlmModel& pruned, const ModelConfig& config,
                         const std::string& out_file);

}  // namespace vlm
