#pragma once
// Note [Linear]: torch::nn::Linear with its own forward, for two reasons.
//  - LibTorch 1.13's forward runs, for inputs of more than two dimensions, a
//    matmul and then `output += bias`: under bf16 autocast that adds a float32
//    bias into a bfloat16 output in place, through 1.13's slow mixed-type
//    path (measured alone: 108 ms against 0.5 ms for a bf16 bias, on
//    [64, 32, 1024] and one thread; the bf16 step was not measured side by
//    side with and without it), and in fp32 it costs a pass over the output.
//    at::linear lets autocast cast the bias and folds it into the addmm.
//  - float32 on a CPU: the three products of forward and backward go to the
//    direct kernel of Note [CPU sgemm] (oneDNN's, with AVX-512 where the CPU
//    has it) when there is one.
// Parameters and their names are torch::nn::Linear's, so checkpoints agree.

#include <torch/torch.h>

namespace vlm {

// input [..., in] x weight [out, in]^T + bias [out] (bias may be undefined).
torch::Tensor linear(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias);

class LinearImpl : public torch::nn::LinearImpl {
 public:
  using torch::nn::LinearImpl::LinearImpl;
  torch::Tensor forward(const torch::Tensor& input) { return vlm::linear(input, weight, bias); }
};
TORCH_MODULE(Linear);

}  // namespace vlm
