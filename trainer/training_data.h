#pragma once
// Everything the loop and the evaluation read: both splits, the tokenizer and
// the configured task over the train split.

#include <memory>

#include "data/fashion_mnist.h"
#include "data/task.h"
#include "data/tokenizer.h"
#include "proto/config.pb.h"

namespace vlm {

struct TrainingData {
  FashionMnist train;
  FashionMnist test;  // held out: used by evaluation only
  WordTokenizer tokenizer{caption_words()};
  TaskKind kind = TaskKind::kMixed;
  std::unique_ptr<Task> train_task;  // refers to `train`: TrainingData does not move
};

std::unique_ptr<TrainingData> load_training_data(const DataConfig& config);

TaskKind task_kind(DataConfig::Task task);

}  // namespace vlm
