#include "model/head_pruning.h"

#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

#include "proto/config.pb.h"

namespace vlm {
namespace {

const char* kind_name(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::kVisionSelf: return "vision self-attention";
    case AttentionKind::kTextSelf: return "text self-attention";
    case AttentionKind::kCross: return "cross-attention";
  }
  return "?";
}

// The sets of one kind: group g holds the layers [g*share, (g+1)*share) of `layers`, shifted by `first`.
void add_sets(const ModelSpec& spec, AttentionKind kind, int64_t layers, int64_t share, int64_t first,
              std::vector<HeadSet>* sets) {
  const size_t start = sets->size();
  for (int64_t g = 0; g < ModelSpec::share_groups(layers, share); ++g) {
    sets->push_back({kind, g, spec.heads_of(kind, g), {}});
  }
  for (int64_t i = 0; i < layers; ++i) (*sets)[start + ModelSpec::share_group_of(i, share)].blocks.push_back(first + i);
}

// Which set a parameter of the model belongs to, by its name; -1 for none.
int64_t set_of_parameter(const std::string& name, const ModelSpec& spec) {
  const auto block_index = [&](const std::string& prefix) {
    return std::stoll(name.substr(prefix.size(), name.find('.', prefix.size()) - prefix.size()));
  };
  const auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  const int64_t vision_sets = spec.vision_attn_groups(), text_sets = spec.text_attn_groups();
  if (name.rfind("vision_blocks.", 0) == 0 && has(".self_attn.")) {
    return ModelSpec::share_group_of(block_index("vision_blocks."), spec.vision_self_attn_share);
  }
  if (name.rfind("text_blocks.", 0) != 0) return -1;
  const int64_t i = block_index("text_blocks.");
  if (has(".self_attn.")) return vision_sets + ModelSpec::share_group_of(i, spec.text_self_attn_share);
  if (has(".cross_q.") || has(".cross_kv.") || has(".cross_out.")) {
    return vision_sets + text_sets + ModelSpec::share_group_of(i - spec.unimodal_layers, spec.cross_kv_share);
  }
  return -1;
}

// `t` with only the heads `keep` along `dim`, which holds `chunks` blocks of
// heads (3 for fused Q|K|V, 2 for K|V) of `unit` values each.
torch::Tensor keep_heads(const torch::Tensor& t, int64_t dim, int64_t chunks, int64_t unit,
                         const std::vector<int64_t>& keep) {
  const int64_t heads = t.size(dim) / chunks / unit;
  std::vector<int64_t> index;
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t h : keep) {
      for (int64_t j = 0; j < unit; ++j) index.push_back((c * heads + h) * unit + j);
    }
  }
  return t.index_select(dim, torch::tensor(index, torch::kLong).to(t.device()));
}

// The part of parameter `name` the kept heads of its set use.
torch::Tensor pruned_parameter(const std::string& name, const torch::Tensor& t, const ModelSpec& spec,
                               const std::vector<std::vector<int64_t>>& keep) {
  const int64_t set = set_of_parameter(name, spec);
  if (set < 0) return t;
  const auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const int64_t dh = spec.head_dim();
  const std::vector<int64_t>& heads = keep[static_cast<size_t>(set)];
  if (ends_with("self_attn.qkv.weight")) return keep_heads(t, 0, 3, dh, heads);
  if (ends_with("self_attn.out.weight") || ends_with("cross_out.weight")) return keep_heads(t, 1, 1, dh, heads);
  if (ends_with("self_attn.relative_position_bias")) return keep_heads(t, 0, 1, 1, heads);
  if (ends_with("cross_q.weight") || ends_with("cross_q.bias")) return keep_heads(t, 0, 1, dh, heads);
  if (ends_with("cross_kv.kv.weight")) return keep_heads(t, 0, 2, dh, heads);
  return t;  // the output projections' biases: one per model dimension
}

}  // namespace

std::string HeadSet::name() const { return std::string(kind_name(kind)) + " group " + std::to_string(group); }

std::vector<HeadSet> head_sets(const ModelSpec& spec) {
  std::vector<HeadSet> sets;
  add_sets(spec, AttentionKind::kVisionSelf, spec.vision_layers, spec.vision_self_attn_share, 0, &sets);
  add_sets(spec, AttentionKind::kTextSelf, spec.text_layers(), spec.text_self_attn_share, 0, &sets);
  add_sets(spec, AttentionKind::kCross, spec.multimodal_layers, spec.cross_kv_share, spec.unimodal_layers, &sets);
  return sets;
}

int64_t removable_heads(const std::vector<HeadSet>& sets) {
  int64_t removable = 0;
  for (const HeadSet& set : sets) removable += set.heads - 1;
  return removable;
}

void set_head_gates(VlmModel& model, const std::vector<torch::Tensor>& gates) {
  const std::vector<HeadSet> sets = head_sets(model->spec());
  CHECK(gates.empty() || gates.size() == sets.size()) << "one gate per head set";
  for (size_t s = 0; s < sets.size(); ++s) {
    const torch::Tensor gate = gates.empty() ? torch::Tensor() : gates[s];
    for (int64_t b : sets[s].blocks) {
      switch (sets[s].kind) {
        case AttentionKind::kVisionSelf: model->vision_blocks()[static_cast<size_t>(b)]->self_gate = gate; break;
        case AttentionKind::kTextSelf: model->text_blocks()[static_cast<size_t>(b)]->self_gate = gate; break;
        case AttentionKind::kCross: model->text_blocks()[static_cast<size_t>(b)]->cross_gate = gate; break;
      }
    }
  }
}

namespace {

// Clears the gates however scoring ends.
struct GatesCleared {
  VlmModel& model;
  ~GatesCleared() { set_head_gates(model, {}); }
};

}  // namespace

HeadScores score_heads(VlmModel& model, const std::vector<StageInputs>& batches) {
  GatesCleared cleared{model};
  HeadScores out;
  out.sets = head_sets(model->spec());
  std::vector<torch::Tensor> totals;
  const torch::TensorOptions options = model->logit_scale.options();
  for (const HeadSet& set : out.sets) totals.push_back(torch::zeros({set.heads}, options.dtype(torch::kDouble)));
  for (const StageInputs& batch : batches) {
    std::vector<torch::Tensor> gates;
    for (const HeadSet& set : out.sets) {
      gates.push_back(torch::ones({batch.tokens.size(0), set.heads, 1, 1}, options).requires_grad_());
    }
    set_head_gates(model, gates);
    const torch::Tensor loss = model->forward(batch).weighted_loss(model->spec());
    // Gradients of the gates alone: the parameters' .grad stay as they were.
    const std::vector<torch::Tensor> grads = torch::autograd::grad({loss}, gates);
    // The loss is the batch's mean: times the batch size, each sample counts alike in any batch.
    const double samples = static_cast<double>(batch.tokens.size(0));
    for (size_t s = 0; s < gates.size(); ++s) totals[s] += grads[s].abs().sum({0, 2, 3}).to(torch::kDouble) * samples;
  }
  for (const torch::Tensor& t : totals) {
    const torch::Tensor host = t.cpu();
    out.scores.emplace_back(host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
  }
  return out;
}

std::vector<std::vector<int64_t>> heads_to_keep(const HeadScores& scores, int64_t remove) {
  std::vector<std::tuple<double, size_t, int64_t>> order;  // (score, set, head), lowest first
  std::vector<int64_t> left;
  for (size_t s = 0; s < scores.sets.size(); ++s) {
    left.push_back(scores.sets[s].heads);
    for (int64_t h = 0; h < scores.sets[s].heads; ++h) {
      const double score = scores.scores[s][static_cast<size_t>(h)];
      if (!std::isfinite(score)) {
        throw std::runtime_error(scores.sets[s].name() + " head " + std::to_string(h) +
                                 " has a non-finite score: the model or the batches give a non-finite loss");
      }
      order.emplace_back(score, s, h);
    }
  }
  std::sort(order.begin(), order.end());
  std::vector<std::vector<bool>> removed(scores.sets.size());
  for (size_t s = 0; s < scores.sets.size(); ++s) removed[s].assign(static_cast<size_t>(scores.sets[s].heads), false);
  int64_t done = 0;
  for (const auto& [score, s, h] : order) {
    if (done == remove) break;
    if (left[s] == 1) continue;  // a set keeps at least one head
    removed[s][static_cast<size_t>(h)] = true;
    --left[s];
    ++done;
  }
  if (done < remove) {
    throw std::invalid_argument("cannot remove " + std::to_string(remove) + " heads: every attention set keeps one, so at most " +
                                std::to_string(done) + " can go");
  }
  std::vector<std::vector<int64_t>> keep(scores.sets.size());
  for (size_t s = 0; s < scores.sets.size(); ++s) {
    for (int64_t h = 0; h < scores.sets[s].heads; ++h) {
      if (!removed[s][static_cast<size_t>(h)]) keep[s].push_back(h);
    }
  }
  return keep;
}

VlmModel prune_heads(VlmModel& model, const std::vector<std::vector<int64_t>>& keep, ModelConfig* config) {
  const ModelSpec& spec = model->spec();
  const std::vector<HeadSet> sets = head_sets(spec);
  CHECK_EQ(keep.size(), sets.size()) << "one list of kept heads per head set";
  ModelSpec pruned_spec = spec;
  KeptHeads* counts = config->mutable_kept_heads();
  counts->Clear();
  for (size_t s = 0; s < sets.size(); ++s) {
    const std::vector<int64_t>& heads = keep[s];
    if (heads.empty()) throw std::invalid_argument(sets[s].name() + " would keep no head");
    for (int64_t h : heads) {
      if (h < 0 || h >= sets[s].heads) throw std::invalid_argument(sets[s].name() + " has no head " + std::to_string(h));
    }
    const auto n = static_cast<int32_t>(heads.size());
    switch (sets[s].kind) {
      case AttentionKind::kVisionSelf: counts->add_vision(n); break;
      case AttentionKind::kTextSelf: counts->add_text(n); break;
      case AttentionKind::kCross: counts->add_cross(n); break;
    }
  }
  pruned_spec.vision_kept_heads.assign(counts->vision().begin(), counts->vision().end());
  pruned_spec.text_kept_heads.assign(counts->text().begin(), counts->text().end());
  pruned_spec.cross_kept_heads.assign(counts->cross().begin(), counts->cross().end());
  VlmModel pruned(pruned_spec);
  pruned->to(model->logit_scale.device());
  torch::NoGradGuard no_grad;
  const auto from = model->named_parameters();
  for (auto& p : pruned->named_parameters()) {
    const torch::Tensor* source = from.find(p.key());
    CHECK(source != nullptr) << p.key() << " is not in the model being pruned";
    p.value().copy_(pruned_parameter(p.key(), *source, spec, keep));
  }
  pruned->train(model->is_training());
  return pruned;
}

}  // namespace vlm
