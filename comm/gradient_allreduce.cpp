#include "comm/gradient_allreduce.h"

#include <glog/logging.h>

#include "comm/mpi_check.h"

namespace vlm {

GradientAllreduce::GradientAllreduce(std::vector<torch::Tensor> parameters, MPI_Comm group)
    : parameters_(std::move(parameters)), group_(group) {
  VLM_MPI_CHECK(MPI_Comm_size(group_, &group_size_));
  int64_t elements = 0;
  for (const auto& p : parameters_) {
    CHECK(p.scalar_type() == torch::kFloat) << "only float32 parameters are reduced";
    elements += p.numel();
  }
  CHECK_LE(elements, static_cast<int64_t>(INT32_MAX)) << "one MPI_Allreduce counts elements in int";
  buffer_ = torch::empty({elements}, torch::kFloat);
}

void GradientAllreduce::average_gradients() {
  if (group_size_ == 1) return;
  int64_t offset = 0;
  for (const auto& p : parameters_) {
    torch::Tensor slot = buffer_.narrow(0, offset, p.numel());
    if (p.grad().defined()) {
      slot.view_as(p).copy_(p.grad());
    } else {
      slot.zero_();  // a parameter unused this step still takes part: every rank sends the same layout
    }
    offset += p.numel();
  }
  VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buffer_.data_ptr<float>(), static_cast<int>(buffer_.numel()),
                              MPI_FLOAT, MPI_SUM, group_));
  buffer_.div_(group_size_);
  offset = 0;
  for (auto& p : parameters_) {
    torch::Tensor slot = buffer_.narrow(0, offset, p.numel()).view_as(p);
    if (p.grad().defined()) {
      p.mutable_grad().copy_(slot);
    } else {
      p.mutable_grad() = slot.clone();
    }
    offset += p.numel();
  }
}

void GradientAllreduce::broadcast_parameters() {
  if (group_size_ == 1) return;
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& p : parameters_) {
    buffer_.narrow(0, offset, p.numel()).view_as(p).copy_(p);
    offset += p.numel();
  }
  VLM_MPI_CHECK(MPI_Bcast(buffer_.data_ptr<float>(), static_cast<int>(buffer_.numel()), MPI_FLOAT, 0, group_));
  offset = 0;
  for (auto& p : parameters_) {
    p.copy_(buffer_.narrow(0, offset, p.numel()).view_as(p));
    offset += p.numel();
  }
}

}  // namespace vlm
