#pragma once
// Everything the loop and the evaluation read: the samples trained on (the
// Fashion-MNIST task or WebDataset shards), the tokenizer, and the held-out
// Fashion-MNIST test split evaluation uses.

#include <memory>

#include "data/fashion_mnist.h"
#include "data/task.h"
#include "data/tokenizer.h"
#include "data/train_set.h"
#include "proto/checkpoint.pb.h"
#include "proto/config.pb.h"

namespace vlm {

struct TrainingData {
  FashionMnist train;  // the task's items (empty when training on shards)
  FashionMnist test;   // held out: used by evaluation only (empty without it)
  std::unique_ptr<Tokenizer> tokenizer;  // data.tokenizer_model's, or the task's word vocabulary
  uint32_t tokenizer_crc32c = 0;         // of the tokenizer model file; 0 for the word vocabulary
  TaskKind kind = TaskKind::kMixed;
  std::unique_ptr<Task> train_task;     // over `train`, or null: TrainingData does not move
  std::unique_ptr<TrainSet> train_set;  // what the loader reads: the task, or the shards
};

// Reads the task's split or indexes the shards, and checks the image settings
// (errors name the data.* field). `with_evaluation`: also the test split,
// and a check that evaluation can read it with this model's image format.
std::unique_ptr<TrainingData> load_training_data(const DataConfig& config, bool with_evaluation = true);

TaskKind task_kind(DataConfig::Task task);

// What checkpoints record of the data (checkpoint/restore.h check_same_data).
DataIdentity data_identity(const TrainingData& data);

}  // namespace vlm
