#pragma once
// A few float64 values brought from the device to the host without stalling
// the host: a non-blocking copy into pinned memory, and an event that tells
// when it has landed. On the CPU the copy is done at once.

#include <torch/torch.h>

#include <optional>

namespace vlm {

class HostReadback {
 public:
  HostReadback(torch::Device device, int64_t count);

  // Enqueues the copy of `values` (float64, `count` of them) after the work
  // queued so far; the previous values are gone.
  void start(const torch::Tensor& values);
  // The values of the last start(), once landed (on a GPU this waits for the
  // work queued before that start(), not for what came after).
  const double* wait();

 private:
  torch::Device device_;
  torch::Tensor host_;
  std::optional<c10::Event> landed_;
};

}  // namespace vlm
