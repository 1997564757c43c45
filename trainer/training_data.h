#pragma once
// Everything the loop, validation and evaluation read: the samples trained
// on (the Fashion-MNIST task or WebDataset shards), the tokenizer, the
// held-out samples validation reads (eval.shards, or the task drawn from the
// Fashion-MNIST test split), and that test split for the final evaluation.

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
  std::unique_ptr<Task> validation_task;     // over `test`, when validation draws the task
  std::unique_ptr<TrainSet> validation_set;  // held out (null when eval is off)
};

// Reads the task's split or indexes the shards, and checks the image settings
// (errors name the data.* field). With `eval.enabled`: also the held-out
// data, and the test split when the model reads the Fashion-MNIST canvas.
std::unique_ptr<TrainingData> load_training_data(const DataConfig& config, const EvalConfig& eval = EvalConfig());

// The tokenizer data.tokenizer_model names (the word vocabulary when empty),
// and the CRC-32C of its file (0 for the word vocabulary).
std::unique_ptr<Tokenizer> make_tokenizer(const DataConfig& config, uint32_t* crc32c);

// How the model trained with `config` reads images: the task's canvas, or
// data.image_* for shards. Errors name the data.* field.
ImageFormat image_format(const DataConfig& config);

// Whether the model reads images as the Fashion-MNIST task draws them (the
// final test-split evaluation needs it).
bool reads_fashion_canvas(const TrainingData& data);

TaskKind task_kind(DataConfig::Task task);

// What checkpoints record of the data (checkpoint/restore.h check_same_data).
DataIdentity data_identity(const TrainingData& data, const DataConfig& config);

}  // namespace vlm
