#pragma once
// Checkpoint files (format: proto/checkpoint.proto). Layout:
//   ROOT/step-NNNNNNNN/shard-RRRRR.bin   raw tensor bytes, one file per writing rank
//   ROOT/step-NNNNNNNN/manifest.pb       written last, atomically: no manifest, no checkpoint
//   ROOT/latest                          the newest complete step directory's name, replaced atomically
// Reading never trusts the files: names, offsets, lengths and sizes are
// checked, every tensor's CRC-32C is verified, and nothing is executed.

#include <torch/torch.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/spec.h"
#include "proto/checkpoint.pb.h"

namespace vlm {

constexpr int kCheckpointFormatVersion = 2;  // 2: CRC-32C checksums

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string step_directory_name(int64_t step);

// CRC-32C of each contiguous CPU tensor's bytes, computed in parallel.
std::vector<uint32_t> checksum_tensors(const std::vector<const torch::Tensor*>& tensors);

// Appends tensors to one shard file; durable after close().
class ShardWriter {
 public:
  ShardWriter(const std::string& step_directory, const std::string& shard_name);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // `crc32c`: the tensor's checksum (checksum_tensors computes many in parallel).
  TensorRecord append(const std::string& name, const torch::Tensor& tensor, uint32_t crc32c);
  void close();  // flush and fsync

 private:
  std::string path_, shard_;
  std::FILE* file_ = nullptr;
  uint64_t offset_ = 0;
};

// Writes the manifest atomically into `step_directory`, then points ROOT/latest at it.
void commit_checkpoint(const std::string& root, const std::string& step_directory, const Manifest& manifest);

// Deletes complete checkpoints beyond the newest `keep`, and incomplete ones older than the newest complete.
void prune_checkpoints(const std::string& root, int keep);

// "latest" (read ROOT/latest) or a step directory path -> the step directory.
std::string resolve_checkpoint(const std::string& root, const std::string& which);

// The model alone in one file, for inference: "VLMMODEL" + format byte +
// 7 pad bytes, the manifest's length (uint64, little-endian), the manifest
// (tensors, config, KV-cache layout; no optimizer, RNG or cursors), then the
// tensors' bytes; a record's offset counts from the end of the manifest.
void export_model(const std::string& step_directory, const std::string& out_file);

class CheckpointReader {
 public:
  // A step directory, or a file written by export_model.
  explicit CheckpointReader(const std::string& step_directory);
  const Manifest& manifest() const { return manifest_; }
  const std::string& directory() const { return directory_; }

  // Reads `record` into `target` after checking dtype, shape, bounds and checksum.
  void read(const TensorRecord& record, torch::Tensor target) const;
  // read() for many tensors at once: every record checked first, each shard
  // opened once, then read and checksummed in chunks on ATen's threads.
  void read_all(const std::vector<std::pair<const TensorRecord*, torch::Tensor>>& reads) const;
  // Reads and checks every tensor; returns the bytes checked.
  int64_t verify_all() const;

 private:
  void check_record(const TensorRecord& record, const torch::Tensor& target) const;

  std::string directory_;
  Manifest manifest_;
  std::string exported_file_;  // set when reading an export_model file
  uint64_t data_start_ = 0;    // in that file
};

// The KV cache the model described by `spec` needs, per text layer.
KvCacheLayout kv_cache_layout(const ModelSpec& spec);

}  // namespace vlm
