#pragma once
// Fashion-MNIST as shipped by Debian's dataset-fashion-mnist package.

#include <torch/torch.h>

#include <array>
#include <string>

namespace vlm {

constexpr int64_t kFashionClasses = 10;
constexpr int64_t kFashionSide = 28;  // pixels

// Class names as words of the captions ("ankle boot" is two words).
extern const std::array<const char*, kFashionClasses> kFashionClassNames;

enum class Split { kTrain, kTest };

struct FashionMnist {
  torch::Tensor images;  // uint8 [N, 28, 28]
  torch::Tensor labels;  // int64 [N], in [0, 10)
  int64_t size() const { return labels.size(0); }
};

// Reads `dir`/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz and checks that
// the two files agree.
FashionMnist load_fashion_mnist(const std::string& dir, Split split);

}  // namespace vlm
