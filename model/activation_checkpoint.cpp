#include "model/activation_checkpoint.h"

#include <glog/logging.h>

#include "model/autocast.h"

namespace vlm {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the backward pass needs to run the block again, besides the
// activations: which optional activations there are, the causal mask, the
// kept patches' positions, the dropout draw.
struct Recipe {
  BlockImpl* block = nullptr;
  torch::Tensor causal_mask;
  torch::Tensor patch_index;
  DropoutDraw dropout;
  bool self_gate = false;   // activations hold the self-attention's log gate
  bool cross = false;       // ... the image K and V
  bool cross_gate = false;  // ... the image tokens' log gate
};

// Activations in order: x, [self-attention log gate], [image K, image V, [image log gate]].
torch::Tensor run(const Recipe& r, const variable_list& a) {
  size_t next = 1;
  PatchAttention patches;
  patches.index = r.patch_index;
  if (r.self_gate) patches.log_gate = a[next++];
  ImageKV image_kv;
  if (r.cross) {
    image_kv.k = a[next++];
    image_kv.v = a[next++];
    if (r.cross_gate) image_kv.log_gate = a[next++];
  }
  return r.block->forward(a[0], r.causal_mask, r.cross ? &image_kv : nullptr, r.dropout, patches);
}

void save_optional(AutogradContext* ctx, const std::string& name, const torch::Tensor& t) {
  ctx->saved_data["has_" + name] = t.defined();
  if (t.defined()) ctx->saved_data[name] = t;
}

torch::Tensor load_optional(AutogradContext* ctx, const std::string& name) {
  return ctx->saved_data["has_" + name].toBool() ? ctx->saved_data[name].toTensor() : torch::Tensor();
}

// Inputs: the activations, then the block's parameters, so that their
// gradients flow to their accumulators (and the gradient reducer's hooks) as
// in an ordinary backward pass.
struct RecomputedBlock : torch::autograd::Function<RecomputedBlock> {
  static variable_list forward(AutogradContext* ctx, const Recipe& r, int64_t activations, at::TensorList inputs) {
    const variable_list a(inputs.begin(), inputs.begin() + activations);
    ctx->save_for_backward(a);
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(r.block);
    save_optional(ctx, "mask", r.causal_mask);
    save_optional(ctx, "index", r.patch_index);
    save_optional(ctx, "keys", r.dropout.keys);
    ctx->saved_data["attention"] = r.dropout.attention;
    ctx->saved_data["head"] = r.dropout.head;
    ctx->saved_data["token"] = r.dropout.token;
    ctx->saved_data["layer"] = r.dropout.layer;
    ctx->saved_data["self_gate"] = r.self_gate;
    ctx->saved_data["cross"] = r.cross;
    ctx->saved_data["cross_gate"] = r.cross_gate;
    ctx->saved_data["autocast"] = autocast_enabled(inputs[0].device());
    torch::NoGradGuard no_grad;  // nothing inside the block is kept for backward
    return {run(r, a)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    Recipe r;
    r.block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    r.causal_mask = load_optional(ctx, "mask");
    r.patch_index = load_optional(ctx, "index");
    r.dropout.keys = load_optional(ctx, "keys");
    r.dropout.attention = ctx->saved_data["attention"].toDouble();
    r.dropout.head = ctx->saved_data["head"].toDouble();
    r.dropout.token = ctx->saved_data["token"].toDouble();
    r.dropout.layer = ctx->saved_data["layer"].toInt();
    r.self_gate = ctx->saved_data["self_gate"].toBool();
    r.cross = ctx->saved_data["cross"].toBool();
    r.cross_gate = ctx->saved_data["cross_gate"].toBool();

    variable_list wrt;  // detached activations, then the parameters
    for (const torch::Tensor& t : ctx->get_saved_variables()) wrt.push_back(t.detach().requires_grad_(true));
    const variable_list activations = wrt;
    const std::vector<torch::Tensor> parameters = r.block->parameters();
    wrt.insert(wrt.end(), parameters.begin(), parameters.end());
    torch::Tensor y;
    {
      torch::AutoGradMode grad_mode(true);
      const AutocastGuard autocast(wrt[0].device(), ctx->saved_data["autocast"].toBool());
      y = run(r, activations);
    }
    variable_list grads = torch::autograd::grad({y}, wrt, {grad_outputs[0]}, /*retain_graph=*/false,
                                                /*create_graph=*/false, /*allow_unused=*/true);
    grads.insert(grads.begin(), {torch::Tensor(), torch::Tensor()});  // for the recipe and the count
    return grads;
  }
};

}  // namespace

torch::Tensor checkpointed_forward(BlockImpl& block, const torch::Tensor& x, const torch::Tensor& causal_mask,
                                   const ImageKV* image_kv, const DropoutDraw& dropout, const PatchAttention& patches) {
  CHECK(patches.received == nullptr) << "attention weights are not kept under activation checkpointing";
  Recipe r;
  r.block = &block;
  r.causal_mask = causal_mask;
  r.patch_index = patches.index;
  r.dropout = dropout;
  variable_list inputs{x};
  if ((r.self_gate = patches.log_gate.defined())) inputs.push_back(patches.log_gate);
  if ((r.cross = image_kv != nullptr)) {
    inputs.push_back(image_kv->k);
    inputs.push_back(image_kv->v);
    if ((r.cross_gate = image_kv->log_gate.defined())) inputs.push_back(image_kv->log_gate);
  }
  const int64_t activations = static_cast<int64_t>(inputs.size());
  const std::vector<torch::Tensor> parameters = block.parameters();
  inputs.insert(inputs.end(), parameters.begin(), parameters.end());
  return RecomputedBlock::apply(r, activations, at::TensorList(inputs))[0];
}

}  // namespace vlm
