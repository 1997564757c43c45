#pragma once
// Reads checkpoints (a step directory, or a file written by export_model)
// without trusting them: every record is checked against the model's tensor,
// every byte read is checksummed (CRC-32C), and nothing is executed.

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "checkpoint/format.h"

namespace vlm {

// The model alone in one file, for inference: "VLMMODEL", the format version
// (one byte) and 7 zero bytes, the manifest's length (uint64, little-endian),
// the manifest as manifest.pb holds it (tensors, config, KV-cache layout; no
// optimizer, RNG or cursors), then the tensors' bytes; a record's offset
// counts from the end of the manifest.
void export_model(const std::string& step_directory, const std::string& out_file);
// The same file from the manifest `model` (its optimizer, RNG and cursors
// dropped) and the host float32 tensors of its records, in order (the records
// give name, shape, length and CRC-32C; offsets are set here).
void write_model_file(Manifest model, const std::vector<torch::Tensor>& tensors, const std::string& out_file);

class CheckpointReader {
 public:
  // A step directory, or a file written by export_model.
  explicit CheckpointReader(const std::string& step_directory);
  const Manifest& manifest() const { return manifest_; }
  const std::string& directory() const { return directory_; }
  // A file written by export_model: weights only, no optimizer state or data position.
  bool exported_model() const { return !exported_file_.empty(); }

  // Reads `record` into `target` after checking dtype, shape, bounds and checksum.
  void read(const TensorRecord& record, torch::Tensor target) const;
  // read() for many tensors at once: every record checked first, each shard
  // opened once, then read and checksummed in chunks on ATen's threads.
  void read_all(const std::vector<std::pair<const TensorRecord*, torch::Tensor>>& reads) const;
  // Every parameter tensor of the manifest, in its order, read and checked.
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> read_parameters() const;
  // Reads and checks every tensor, and that the records cover every shard
  // byte for byte; returns the bytes checked.
  int64_t verify_all() const;

 private:
  void check_record(const TensorRecord& record, const torch::Tensor& target) const;
  // Every record's shape holds exactly its length in float32 (so no shape read from the manifest overflows).
  void check_shapes() const;

  std::string directory_;
  Manifest manifest_;
  std::string exported_file_;  // set when reading an export_model file
  uint64_t data_start_ = 0;    // in that file
};

}  // namespace vlm
