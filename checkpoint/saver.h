#pragma once
// A checkpoint's contents taken from the trainer at a step boundary, and the
// code that writes them: synchronously, or on a background thread while
// training goes on. Every cross-rank step of a save (the agreement that all
// shards are durable, the gathers to rank 0) goes through a comm::Backend,
// with its timeout.

#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/adam_state.h"
#include "checkpoint/format.h"
#include "comm/backend.h"
#include "comm/topology.h"
#include "model/parameters.h"

namespace vlm {

struct CheckpointSnapshot {
  struct Parameter {
    std::string name;
    std::vector<std::string> aliases;
    torch::Tensor tensor;  // the live tensor, or a copy (AsyncCheckpointer)
  };
  int64_t step = 0;
  int64_t consumed_samples = 0;
  uint64_t lineage_id = 0;            // Manifest.lineage_id (rank 0's is written)
  TrainConfig config;
  Topology topology;
  KvCacheLayout kv_cache;
  DataIdentity data;
  ValidationRecord validation;        // of this step, when validation ran (has_validation)
  bool has_validation = false;
  torch::Tensor rng_state;
  std::vector<Parameter> parameters;  // empty on ranks that do not write tensors
  std::vector<AdamState> optimizer;  // tensors: live, or copies (AsyncCheckpointer)
  int shard = 0;                      // this writer's shard-NNNNN.bin (its stage, + stages x dp_rank under ZeRO-1)
  std::vector<int> stage_starts{0};   // first block of each pipeline stage
};

// What a trainer hands over to be saved: the parameters and the optimizer
// state this rank writes (either may be empty). The snapshot refers to the
// live host tensors (a GPU's are copied to the host now); the step, RNG state
// and metadata are captured now.
CheckpointSnapshot make_snapshot(int64_t step, const TrainConfig& config, const Topology& topology,
                                 const std::vector<UniqueParameter>& to_write, const std::vector<AdamState>& optimizer);

// Collective over `group` (every rank of the job): shards, agreement that all
// were written, manifest by rank 0, latest, best (when the snapshot's
// validation is the best so far), pruning. A failure on any rank
// (`failed_before`: one that happened before writing, such as an asynchronous
// copy) throws on every rank; a failed pruning is only logged. The ranks wait
// for the slowest shard at most `timeout`, then the job ends with a report.
void write_checkpoint(const CheckpointSnapshot& snapshot, const std::string& root, int keep, Backend& group,
                      Millis timeout, std::exception_ptr failed_before = nullptr);

// Saves while training goes on. save() returns at once; the writer thread
// first copies the snapshot's tensors into one host staging buffer (reused
// from save to save), which overlaps the next forward and backward, which
// only read them; the trainer calls wait_until_copied() before its optimizer
// step changes them. Then it checksums and writes from the copy.
class AsyncCheckpointer {
 public:
  // `group`: every rank of the job, used by the writer thread alone.
  AsyncCheckpointer(Backend& group, Millis timeout) : group_(group), timeout_(timeout) {}
  ~AsyncCheckpointer();  // waits for the save in progress
  AsyncCheckpointer(const AsyncCheckpointer&) = delete;
  AsyncCheckpointer& operator=(const AsyncCheckpointer&) = delete;

  // Waits for the previous save (rethrowing its failure), then starts this one.
  void save(CheckpointSnapshot live, const std::string& root, int keep);
  void wait_until_copied();
  void wait();
  double last_seconds() const { return last_seconds_; }

 private:
  void set_copied(bool copied);

  Backend& group_;
  Millis timeout_;
  std::thread writer_;
  std::exception_ptr failure_;
  torch::Tensor staging_;  // only the writer thread touches it
  std::mutex mutex_;
  std::condition_variable copied_signal_;
  bool copied_ = true;
  std::atomic<double> last_seconds_{0};
};

// A trainer's saves: synchronous (the live tensors, written before save()
// returns), or asynchronous on an AsyncCheckpointer made by the first such save.
class CheckpointSaver {
 public:
  // `group`: every rank of the job; `timeout`: write_checkpoint's.
  CheckpointSaver(Backend& group, Millis timeout) : group_(group), timeout_(timeout) {}
  void save(CheckpointSnapshot snapshot, const std::string& root, int keep, bool async);
  void wait_until_copied() {  // before the optimizer step changes the tensors
    if (async_) async_->wait_until_copied();
  }
  void wait() {  // the save in progress is complete (rethrows its failure)
    if (async_) async_->wait();
  }

 private:
  Backend& group_;
  Millis timeout_;
  std::unique_ptr<AsyncCheckpointer> async_;
};

}  // namespace vlm
