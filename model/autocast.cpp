#include "model/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace vlm {
namespace {

// LibTorch 2.4 made the autocast API per device type; 1.13 has one per backend.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool is_enabled(torch::DeviceType type) { return at::autocast::is_autocast_enabled(type); }
void set_enabled(torch::DeviceType type, bool on) { at::autocast::set_autocast_enabled(type, on); }
torch::ScalarType dtype(torch::DeviceType type) { return at::autocast::get_autocast_dtype(type); }
void set_dtype(torch::DeviceType type, torch::ScalarType t) { at::autocast::set_autocast_dtype(type, t); }
#else
bool is_enabled(torch::DeviceType type) {
  return type == torch::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void set_enabled(torch::DeviceType type, bool on) {
  type == torch::kCUDA ? at::autocast::set_enabled(on) : at::autocast::set_cpu_enabled(on);
}
torch::ScalarType dtype(torch::DeviceType type) {
  return type == torch::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_dtype(torch::DeviceType type, torch::ScalarType t) {
  type == torch::kCUDA ? at::autocast::set_autocast_gpu_dtype(t) : at::autocast::set_autocast_cpu_dtype(t);
}
#endif

}  // namespace

bool autocast_enabled(const torch::Device& device) { return is_enabled(device.type()); }

AutocastGuard::AutocastGuard(const torch::Device& device, bool enabled) : enabled_(enabled), type_(device.type()) {
  if (!enabled_) return;
  was_enabled_ = is_enabled(type_);
  previous_dtype_ = dtype(type_);
  set_enabled(type_, true);
  set_dtype(type_, torch::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_enabled(type_, was_enabled_);
  set_dtype(type_, previous_dtype_);
}

}  // namespace vlm
