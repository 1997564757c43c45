#include "model/batched_matmul.h"

#include <ATen/Parallel.h>

#include <vector>

#include "model/cpu_sgemm.h"

namespace vlm {
namespace {

// One operand as sgemm reads it: every matrix's offset, and its row stride.
struct Matrices {
  const float* data;
  std::vector<int64_t> offsets;
  int64_t row_stride;
};

Matrices matrices(const torch::Tensor& x) {
  const int64_t dims = x.dim();
  Matrices out{x.data_ptr<float>(), {}, x.size(-2) == 1 ? std::max<int64_t>(1, x.size(-1)) : x.stride(-2)};
  int64_t batch = 1;
  for (int64_t d = 0; d < dims - 2; ++d) batch *= x.size(d);
  out.offsets.resize(batch);
  for (int64_t i = 0; i < batch; ++i) {
    int64_t rest = i, offset = 0;
    for (int64_t d = dims - 3; d >= 0; --d) {
      offset += (rest % x.size(d)) * x.stride(d);
      rest /= x.size(d);
    }
    out.offsets[i] = offset;
  }
  return out;
}

// Whether sgemm can read x in place: unit stride along rows, rows no closer than their length.
bool readable(const torch::Tensor& x) {
  const bool unit = x.stride(-1) == 1 || x.size(-1) == 1;
  return unit && (x.size(-2) == 1 || x.stride(-2) >= x.size(-1));
}

// op(x) op(y) for every matrix of the batch, op = transpose where asked; contiguous.
torch::Tensor products(torch::Tensor x, bool transpose_x, torch::Tensor y, bool transpose_y) {
  if (!readable(x)) x = x.contiguous();
  if (!readable(y)) y = y.contiguous();
  const int64_t rows = transpose_x ? x.size(-1) : x.size(-2), inner = transpose_x ? x.size(-2) : x.size(-1);
  const int64_t columns = transpose_y ? y.size(-2) : y.size(-1);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 2);
  shape.push_back(rows);
  shape.push_back(columns);
  torch::Tensor out = torch::empty(shape, x.options());
  const Matrices a = matrices(x), b = matrices(y);
  float* c = out.data_ptr<float>();
  const int64_t batch = static_cast<int64_t>(a.offsets.size()), size = rows * columns;
  // A few matrices per task: each product is small, so one per task would cost more than it computes.
  const int64_t grain = std::max<int64_t>(1, 262144 / std::max<int64_t>(1, rows * columns * inner));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      cpu_sgemm({transpose_x, transpose_y, rows, columns, inner, a.data + a.offsets[i], a.row_stride,
                 b.data + b.offsets[i], b.row_stride, c + i * size, columns});
    }
  });
  return out;
}

class BatchedMatmul : public torch::autograd::Function<BatchedMatmul> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b,
                               bool transpose_b) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["transpose_b"] = transpose_b;
    return products(a, false, b, transpose_b);
  }

  // C = A B:   dA = dC B^T, dB = A^T dC.   C = A B^T:   dA = dC B, dB = dC^T A.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &a = saved[0], &b = saved[1], &dc = grads[0];
    const bool transpose_b = ctx->saved_data["transpose_b"].toBool();
    torch::Tensor da, db;
    if (ctx->needs_input_grad(0)) da = products(dc, false, b, !transpose_b);
    if (ctx->needs_input_grad(1)) db = transpose_b ? products(dc, true, a, false) : products(a, true, dc, false);
    return {da, db, torch::Tensor()};
  }
};

bool direct(const torch::Tensor& a, const torch::Tensor& b) {
  return takes_cpu_sgemm(a) && takes_cpu_sgemm(b) && a.dim() >= 3 && a.dim() == b.dim() && a.numel() > 0 &&
         b.numel() > 0 && a.sizes().slice(0, a.dim() - 2) == b.sizes().slice(0, b.dim() - 2);
}

}  // namespace

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, bool transpose_b) {
  if (direct(a, b)) return BatchedMatmul::apply(a, b, transpose_b);
  return torch::matmul(a, transpose_b ? b.transpose(-2, -1) : b);
}

}  // namespace vlm
