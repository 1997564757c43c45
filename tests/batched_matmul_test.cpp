// The direct batched products (Note [CPU sgemm]) against torch::matmul:
// values and gradients, on the strided views attention passes them.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdlib>

#include "model/attention.h"
#include "model/batched_matmul.h"
#include "model/cpu_sgemm.h"
#include "model/linear.h"

namespace vlm {
namespace {

void expect_close(const torch::Tensor& got, const torch::Tensor& want, const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5)) << what << ": largest difference "
                                                        << (got - want).abs().max().item<float>();
}

// Forward and both gradients of batched_matmul(a, b, transpose_b) equal torch::matmul's.
void expect_as_matmul(const torch::Tensor& a0, const torch::Tensor& b0, bool transpose_b) {
  const torch::Tensor a = a0.detach().requires_grad_(), b = b0.detach().requires_grad_();
  const torch::Tensor ra = a0.detach().requires_grad_(), rb = b0.detach().requires_grad_();
  const torch::Tensor got = batched_matmul(a, b, transpose_b);
  const torch::Tensor want = torch::matmul(ra, transpose_b ? rb.transpose(-2, -1) : rb);
  expect_close(got, want, "product");
  const torch::Tensor upstream = torch::randn_like(want);
  (got * upstream).sum().backward();
  (want * upstream).sum().backward();
  expect_close(a.grad(), ra.grad(), "gradient of a");
  expect_close(b.grad(), rb.grad(), "gradient of b");
}

TEST(BatchedMatmul, KernelFound) {
#if TORCH_VERSION_MAJOR < 2
  // Debian's LibTorch 1.13 links oneDNN and OpenBLAS: the direct path must be taken.
  EXPECT_TRUE(cpu_sgemm_available()) << "neither dnnl_sgemm nor cblas_sgemm is exported";
#else
  // pip wheels hide both (MKL inside): LibTorch's own path, fast there.
  if (!cpu_sgemm_available()) GTEST_SKIP() << "this LibTorch exports neither dnnl_sgemm nor cblas_sgemm";
#endif
  std::printf("cpu sgemm: %s\n", cpu_sgemm_name());
}

TEST(BatchedMatmul, SelfAttentionOnHeadViews) {
  torch::manual_seed(0);
  const torch::Tensor qkv = torch::randn({3, 7, 3 * 4 * 5});  // [B, T, 3 x H x dh]
  const auto parts = qkv.chunk(3, -1);
  const torch::Tensor q = split_heads(parts[0], 4), k = split_heads(parts[1], 4), v = split_heads(parts[2], 4);
  ASSERT_FALSE(q.is_contiguous());
  expect_as_matmul(q, k, /*transpose_b=*/true);  // scores
  const torch::Tensor weights = torch::softmax(torch::randn({3, 4, 7, 7}), -1);
  expect_as_matmul(weights, v, /*transpose_b=*/false);  // weights x values
}

TEST(BatchedMatmul, ShapesAndLayouts) {
  torch::manual_seed(1);
  expect_as_matmul(torch::randn({5, 3, 8}), torch::randn({5, 8, 6}), false);               // 3-D
  expect_as_matmul(torch::randn({2, 3, 1, 8}), torch::randn({2, 3, 9, 8}), true);          // one query (decoding)
  expect_as_matmul(torch::randn({2, 3, 8, 5}).transpose(-2, -1), torch::randn({2, 3, 8, 4}), false);  // columns strided
  expect_as_matmul(torch::randn({4, 6, 10}).narrow(2, 2, 5), torch::randn({4, 5, 3}), false);         // rows padded
}

TEST(BatchedMatmul, TheSameWithTheDirectPathOff) {
  torch::manual_seed(2);
  const torch::Tensor a = torch::randn({2, 4, 6, 8}), b = torch::randn({2, 4, 6, 8});
  const torch::Tensor direct = batched_matmul(a, b, true);
  // bf16 and other dtypes take torch::matmul.
  const torch::Tensor half = batched_matmul(a.to(torch::kBFloat16), b.to(torch::kBFloat16), true);
  EXPECT_EQ(half.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(half.to(torch::kFloat), direct, 0.05, 0.1));
  const torch::Tensor doubles = batched_matmul(a.to(torch::kDouble), b.to(torch::kDouble), true);
  EXPECT_TRUE(torch::allclose(doubles.to(torch::kFloat), direct, 1e-5, 1e-5));
}

// vlm::Linear (Note [Linear]) against torch::linear: values and the three gradients.
TEST(DirectLinear, AsTorchLinear) {
  torch::manual_seed(3);
  for (const bool with_bias : {true, false}) {
    Linear layer(torch::nn::LinearOptions(8, 5).bias(with_bias));
    const torch::Tensor x0 = torch::randn({3, 4, 10}).narrow(2, 1, 8);  // not contiguous
    const torch::Tensor x = x0.detach().requires_grad_(), rx = x0.detach().requires_grad_();
    const torch::Tensor w = layer->weight.detach().requires_grad_();
    const torch::Tensor b = with_bias ? layer->bias.detach().requires_grad_() : torch::Tensor();
    const torch::Tensor got = layer->forward(x), want = torch::linear(rx, w, b);
    expect_close(got, want, "output");
    const torch::Tensor upstream = torch::randn_like(want);
    (got * upstream).sum().backward();
    (want * upstream).sum().backward();
    expect_close(x.grad(), rx.grad(), "gradient of the input");
    expect_close(layer->weight.grad(), w.grad(), "gradient of the weight");
    if (with_bias) expect_close(layer->bias.grad(), b.grad(), "gradient of the bias");
  }
}

}  // namespace
}  // namespace vlm
