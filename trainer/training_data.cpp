#include "trainer/training_data.h"

namespace vlm {

TaskKind task_kind(DataConfig::Task task) {
  switch (task) {
    case DataConfig::SINGLE: return TaskKind::kSingle;
    case DataConfig::PAIR: return TaskKind::kPair;
    case DataConfig::MIXED: return TaskKind::kMixed;
  }
  return TaskKind::kMixed;
}

std::unique_ptr<TrainingData> load_training_data(const DataConfig& config) {
  auto data = std::make_unique<TrainingData>();
  data->train = load_fashion_mnist(config.fashion_mnist_dir(), Split::kTrain);
  data->test = load_fashion_mnist(config.fashion_mnist_dir(), Split::kTest);
  data->kind = task_kind(config.task());
  data->train_task = std::make_unique<Task>(data->kind, data->train, config.train_samples(),
                                            static_cast<uint64_t>(config.seed()));
  return data;
}

}  // namespace vlm
