#pragma once
// Where torch::optim keeps a parameter's state.

#include <torch/torch.h>

#include <string>
#include <type_traits>

namespace vlm {

// LibTorch 1.13 keys optimizer state by the TensorImpl's address as a string,
// 2.x by the address itself.
template <typename StateMap>
auto optimizer_state_key(const StateMap&, const torch::Tensor& p) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    return c10::guts::to_string(p.unsafeGetTensorImpl());
  } else {
    return static_cast<typename StateMap::key_type>(p.unsafeGetTensorImpl());
  }
}

}  // namespace vlm
