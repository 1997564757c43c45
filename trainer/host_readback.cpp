#include "trainer/host_readback.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <chrono>
#include <thread>

namespace vlm {

HostReadback::HostReadback(torch::Device device, int64_t count)
    : device_(device),
      host_(torch::empty({count}, torch::TensorOptions().dtype(torch::kDouble).pinned_memory(!device.is_cpu()))) {
  if (!device.is_cpu()) landed_.emplace(device.type());
}

void HostReadback::start(const torch::Tensor& values) {
  host_.copy_(values.detach().view({-1}), /*non_blocking=*/!device_.is_cpu());
  if (device_.is_cpu()) return;
  landed_->record(c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_));
}

const double* HostReadback::wait() {
  // c10::Event has no synchronize() in LibTorch 1.13: poll, gently.
  while (landed_ && !landed_->query()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  return host_.data_ptr<double>();
}

}  // namespace vlm
