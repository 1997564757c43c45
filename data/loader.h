#pragma once
// Batches built ahead of the step: `threads` workers decode the next
// micro-batches (at most `depth` ahead of the one the step takes) while the
// model computes, so the step waits for data only when decoding is slower
// than training. Which samples form a batch is the sampler's decision alone:
// results do not depend on the number of threads.
//
// Micro-batches are asked for in order ((step, micro), (step, micro + 1),
// ...); asking for any other one (a resume) starts over from there.

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "data/sampler.h"
#include "data/train_set.h"

namespace vlm {

struct LoaderOptions {
  int threads = 2;         // 0: build each batch when asked, in the caller's thread
  int depth = 4;           // micro-batches built ahead
  int micro_batches = 1;   // per step
  int64_t max_tokens = 12;
  bool pinned = false;     // page-locked host memory (for asynchronous copies to a GPU)
};

struct LoadedBatch {
  Batch batch;            // this rank's share, as wide as the global micro-batch's longest caption
  CaptionCounts global;   // of the whole global micro-batch (every rank's share)
};

class Loader {
 public:
  // `mine`: this rank's share of each micro-batch; `global`: the whole of it.
  Loader(const TrainSet& set, DistributedSampler mine, DistributedSampler global, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Waits for (step, micro) and hands it over; rethrows what building it threw.
  LoadedBatch get(int64_t step, int micro);

 private:
  struct Job {
    std::vector<int64_t> mine, global;
    int64_t epoch = 0;
  };
  Job job(int64_t sequence);  // under mutex_: the samplers cache per epoch
  LoadedBatch build(const Job& job);
  void work();

  const TrainSet& set_;
  DistributedSampler mine_, global_;
  LoaderOptions options_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false;
  int64_t generation_ = 0;  // bumped when get() starts over: results of older jobs are dropped
  int64_t next_ = 0;        // sequence number (step * micro_batches + micro) the next worker builds
  int64_t taken_ = -1;      // the next sequence number get() expects; -1 before the first
  struct Result {
    LoadedBatch batch;
    std::exception_ptr error;
  };
  std::map<int64_t, Result> ready_;
  std::vector<std::thread> workers_;
};

}  // namespace vlm
