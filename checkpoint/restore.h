#pragma once
// Loading a checkpoint into a model (and optimizer).

#include <torch/torch.h>

#include <vector>

#include "checkpoint/adam_state.h"
#include "checkpoint/reader.h"
#include "model/parameters.h"
#include "proto/config.pb.h"

namespace vlm {

// Restores `parameters` (by global name) from any checkpoint or exported
// model of a model with config `model` and the same sharing map, and, given
// an optimizer's state, fills that in place (tensors and step; entries the
// checkpoint lacks are left as they are).
void restore_parameters(const CheckpointReader& reader, const ModelConfig& model,
                        const std::vector<UniqueParameter>& parameters, std::vector<AdamState>* optimizer);

// restore_parameters(), then world rank `rank`'s RNG state; given an optimizer's state,
// fills that in place (tensors and step; entries the checkpoint lacks, as an
// exported model file lacks all, are left as they are) from any checkpoint of
// the same model, whatever its DP size or partition, and world rank `rank`'s
// RNG state. Returns the step to continue from (re-derived from the consumed
// samples).
int64_t restore_checkpoint(const CheckpointReader& reader, const TrainConfig& config, int rank,
                           const std::vector<UniqueParameter>& parameters, std::vector<AdamState>* optimizer);

// A CheckpointError unless `now` is the data the checkpoint's run read (its
// sample count, seed, task or shards, and tokenizer): resuming on other data
// would not continue the run. Checkpoints before format 4 record no data and
// pass; fields a checkpoint lacks are not compared.
void check_same_data(const CheckpointReader& reader, const DataIdentity& now);
// The tokenizer part of check_same_data: what starting from a checkpoint's
// weights on other data needs (--init-from).
void check_same_tokenizer(const CheckpointReader& reader, const DataIdentity& now);

}  // namespace vlm
