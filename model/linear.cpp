#include "model/linear.h"

#include "model/cpu_sgemm.h"

namespace vlm {
namespace {

// y = x W^T + b on rows x [M, in]: the bias first, then sgemm adds the product
// to it. An empty `bias` is none (autograd functions take no undefined inputs).
torch::Tensor forward_rows(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const int64_t rows = x.size(0), in = x.size(1), out = weight.size(0);
  const bool with_bias = bias.numel() > 0;
  torch::Tensor y = with_bias ? bias.expand({rows, out}).contiguous() : torch::empty({rows, out}, x.options());
  cpu_sgemm({false, true, rows, out, in, x.data_ptr<float>(), in, weight.data_ptr<float>(), in, y.data_ptr<float>(),
             out, 1.0f, with_bias ? 1.0f : 0.0f});
  return y;
}

class DirectLinear : public torch::autograd::Function<DirectLinear> {
 public:
  // x [..., in], made contiguous; weight [out, in], contiguous (a parameter).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    const torch::Tensor x = input.reshape({-1, input.size(-1)}).contiguous();
    ctx->save_for_backward({x, weight});
    ctx->saved_data["bias"] = bias.numel() > 0;
    ctx->saved_data["input_sizes"] = input.sizes();
    std::vector<int64_t> out_sizes(input.sizes().begin(), input.sizes().end() - 1);
    out_sizes.push_back(weight.size(0));
    return forward_rows(x, weight, bias).view(out_sizes);
  }

  // dX = dY W,  dW = dY^T X,  db = the column sums of dY.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1];
    const int64_t rows = x.size(0), in = x.size(1), out = weight.size(0);
    const torch::Tensor dy = grads[0].reshape({rows, out}).contiguous();
    torch::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      dx = torch::empty({rows, in}, x.options());
      cpu_sgemm({false, false, rows, in, out, dy.data_ptr<float>(), out, weight.data_ptr<float>(), in,
                 dx.data_ptr<float>(), in});
      dx = dx.view(ctx->saved_data["input_sizes"].toIntVector());
    }
    if (ctx->needs_input_grad(1)) {
      dw = torch::empty({out, in}, x.options());
      cpu_sgemm({true, false, out, in, rows, dy.data_ptr<float>(), out, x.data_ptr<float>(), in, dw.data_ptr<float>(),
                 in});
    }
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) db = dy.sum(0);
    return {dx, dw, db};
  }
};

bool direct(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias) {
  return takes_cpu_sgemm(input) && takes_cpu_sgemm(weight) && weight.is_contiguous() && input.dim() >= 2 &&
         input.numel() > 0 && (!bias.defined() || (takes_cpu_sgemm(bias) && bias.is_contiguous()));
}

}  // namespace

torch::Tensor linear(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (direct(input, weight, bias)) {
    return DirectLinear::apply(input, weight, bias.defined() ? bias : torch::empty({0}, weight.options()));
  }
  return torch::linear(input, weight, bias);
}

}  // namespace vlm
