#pragma once
// The simple data-parallel synchronisation of the first slice: after backward,
// all gradients are packed into one buffer, summed with one MPI_Allreduce and
// divided by the group size. (The data-parallel work replaces this with
// bucketed reduction overlapped with backward.)

#include <mpi.h>
#include <torch/torch.h>

#include <vector>

namespace vlm {

class GradientAllreduce {
 public:
  // `parameters` must be unique (see model/parameters.h) and float32.
  GradientAllreduce(std::vector<torch::Tensor> parameters, MPI_Comm group);

  // Averages every parameter's gradient over the group, in place.
  void average_gradients();

  // Copies rank 0's parameter values to every rank of the group.
  void broadcast_parameters();

 private:
  std::vector<torch::Tensor> parameters_;
  MPI_Comm group_;
  int group_size_ = 1;
  torch::Tensor buffer_;  // flat float32, reused every step
};

}  // namespace vlm
