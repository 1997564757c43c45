#include "comm/gather_with_grad.h"

namespace vlm {
namespace {

struct GatherRows : public torch::autograd::Function<GatherRows> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor local, Backend* backend,
                               int64_t timeout_ms) {
    const int64_t size = backend->size(), rows = local.size(0);
    ctx->saved_data["offset"] = backend->rank() * rows;
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["size"] = size;
    std::vector<int64_t> shape = local.sizes().vec();
    shape[0] = size * rows;
    torch::Tensor gathered = torch::empty(shape, local.options());
    backend->allgather(local.contiguous(), gathered, {Millis(timeout_ms)})->wait();
    return gathered;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t offset = ctx->saved_data["offset"].toInt(), rows = ctx->saved_data["rows"].toInt();
    const double size = static_cast<double>(ctx->saved_data["size"].toInt());
    return {grads[0].narrow(0, offset, rows) * size, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor gather_with_grad(const torch::Tensor& local, Backend& backend, Millis timeout) {
  if (backend.size() == 1) return local;
  return GatherRows::apply(local, &backend, static_cast<int64_t>(timeout.count()));
}

}  // namespace vlm
