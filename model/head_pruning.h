#pragma once
// Head importance and head pruning (issue 14, item 6; docs/model.md).
//
// A head set is the heads of one attention weight set: a vision or text
// self-attention sharing group (its W_qkv, W_o and position bias), or a
// cross-attention K/V sharing group (with the W_q and W_o of each of its
// layers). Every layer of a group uses the set's heads, so a head is scored
// over the whole group and removed from every layer of it.
//
// Note [Head sensitivity]: a gate xi multiplies head h's attention weights A
// in every layer of its group (xi = 1 is the model). dL/dxi = sum over the
// group's layers, queries and keys of A * dL/dA, the first-order change of
// the loss when the head is removed (xi -> 0). A head's score is
// sum over samples |dL/dxi_sample| (Michel et al., 2019, "Are Sixteen Heads
// Really Better than One?"; the notes' section 3.1), in the loss's units, so
// scores compare across sets. (L is a batch's mean loss; each sample's
// term is taken times the batch size, so batches of any size weigh alike.)

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/stage_io.h"
#include "model/vlm.h"

namespace vlm {

struct HeadSet {
  AttentionKind kind;
  int64_t group;                // sharing group within its kind
  int64_t heads;                // heads it has now
  std::vector<int64_t> blocks;  // its layers, as indices into the tower's blocks
  std::string name() const;     // "vision self-attention group 0"
};

// Every head set of the model, vision, then text, then cross-attention.
std::vector<HeadSet> head_sets(const ModelSpec& spec);
// How many heads can go: every set keeps one.
int64_t removable_heads(const std::vector<HeadSet>& sets);

struct HeadScores {
  std::vector<HeadSet> sets;
  std::vector<std::vector<double>> scores;  // [set][head], Note [Head sensitivity]
};

// Scores every head over `batches` (full inputs, as training reads them;
// no dropout keys). The model's gradients are left untouched.
HeadScores score_heads(VlmModel& model, const std::vector<StageInputs>& batches);

// For each set, the heads to keep (in order) when the `remove` lowest-scoring
// heads of the whole model go; a set always keeps at least one head. An
// error if `remove` leaves a set empty whatever the choice.
std::vector<std::vector<int64_t>> heads_to_keep(const HeadScores& scores, int64_t remove);

// A new model in which set s has only heads keep[s] (in that order): its
// projections are physically smaller, every other weight is copied. `config`
// (the model's) is updated with the kept head counts (model.kept_heads).
VlmModel prune_heads(VlmModel& model, const std::vector<std::vector<int64_t>>& keep, ModelConfig* config);

// Sets (or, with an empty list, clears) gates [b, heads, 1, 1] multiplying
// each set's attention weights, one tensor per set of head_sets(): what
// score_heads differentiates, and what tests compare a pruned model against.
void set_head_gates(VlmModel& model, const std::vector<torch::Tensor>& gates);

}  // namespace vlm
