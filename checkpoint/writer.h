#pragma once
// Writing checkpoint files: shards, the manifest and `latest` (committed in
// that order, each through a DurableFile), and pruning.

#include <torch/torch.h>

#include <string>
#include <vector>

#include "checkpoint/durable_file.h"
#include "checkpoint/format.h"

namespace vlm {

// CRC-32C of each contiguous host tensor's bytes, computed in parallel.
std::vector<uint32_t> checksum_tensors(const std::vector<const torch::Tensor*>& tensors);

// Appends tensors to one shard file; it exists, durable, after commit().
class ShardWriter {
 public:
  ShardWriter(const std::string& step_directory, const std::string& shard_name);

  // `crc32c`: the tensor's checksum (checksum_tensors computes many in parallel).
  TensorRecord append(const std::string& name, const torch::Tensor& tensor, uint32_t crc32c);
  void commit() { file_.commit(); }

 private:
  std::string shard_;
  DurableFile file_;
};

// A commit that failed, and whether `latest` already names the new step (its
// rename went through; only the directory's fsync failed).
class CommitError : public CheckpointError {
 public:
  CommitError(const std::string& message, bool latest_moved) : CheckpointError(message), latest_moved(latest_moved) {}
  bool latest_moved;
};

// Writes the manifest into `step_directory`, then points ROOT/latest at it.
// Throws CommitError.
void commit_checkpoint(const std::string& root, const std::string& step_directory, const Manifest& manifest);

// After `just_written` (a step directory name) was committed: deletes the
// checkpoints of its lineage (Manifest.lineage_id) beyond the newest `keep`,
// and unfinished step directories older than it. It never deletes
// `just_written`, what `latest` or `best` names (an unreadable `best` is
// reported and protects nothing), anything newer, or another lineage's
// checkpoints. Never throws: returns what it could not delete or read ("" if
// nothing); a failure here is a warning, the save itself succeeded.
std::string prune_checkpoints(const std::string& root, int keep, const std::string& just_written, uint64_t lineage_id);

}  // namespace vlm
