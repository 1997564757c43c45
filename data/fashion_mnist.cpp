#include "data/fashion_mnist.h"

#include "data/idx.h"

namespace vlm {

const std::array<const char*, kFashionClasses> kFashionClassNames = {
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"};

FashionMnist load_fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = dir + "/" + (split == Split::kTrain ? "train" : "t10k");
  const std::string images_path = prefix + "-images-idx3-ubyte.gz";
  const std::string labels_path = prefix + "-labels-idx1-ubyte.gz";
  FashionMnist data{read_idx_images(images_path), read_idx_labels(labels_path, kFashionClasses)};
  if (data.images.size(1) != kFashionSide || data.images.size(2) != kFashionSide) {
    throw DataError(images_path + ": images are " + std::to_string(data.images.size(1)) + "x" +
                    std::to_string(data.images.size(2)) + ", Fashion-MNIST images are 28x28");
  }
  if (data.images.size(0) != data.labels.size(0)) {
    throw DataError(images_path + " holds " + std::to_string(data.images.size(0)) + " images but " +
                    labels_path + " holds " + std::to_string(data.labels.size(0)) + " labels");
  }
  return data;
}

}  // namespace vlm
