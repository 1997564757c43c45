#pragma once
// Note [Replicas in one process]: one process with several cores is slower
// than as many one-thread ranks, measured (bench/RESULTS.md): ATen's
// element-wise operations on tensors this small run on one thread whatever
// the pool (its grain size), and the BLAS pool spins while they run. So a
// process may run K replicas of the step at once, one thread each, as K
// ranks would: replica k takes the k-th share of every micro-batch, the
// contrastive loss sees every replica's features (gather_rows below, as
// Note [Contrastive gather]), and the gradients are averaged over replicas.
// Replica 0 runs on the caller's thread and accumulates into the parameters'
// gradients; the others compute theirs apart, and they are added in replica
// order after all are done, so a step is deterministic for any K.

#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/backend.h"

namespace vlm {

class ReplicaThreads {
 public:
  // Starts replicas - 1 threads, each computing with one thread (ATen's
  // pool, oneDNN) for the life of this object; OpenBLAS uses one thread in
  // the process while run() runs.
  explicit ReplicaThreads(int replicas);
  ~ReplicaThreads();
  ReplicaThreads(const ReplicaThreads&) = delete;
  ReplicaThreads& operator=(const ReplicaThreads&) = delete;

  int size() const { return replicas_; }

  // Runs work(k) for every replica k at once (0 on this thread, which
  // computes with one thread meanwhile) and returns when all are done;
  // rethrows the first failure (the other replicas are released from
  // gather_rows with an error).
  void run(const std::function<void(int)>& work, Millis timeout);

  // Called by every replica during run(): all replicas' rows of `local`
  // ([b, ...], the same b for all), in replica order. Backward gives replica
  // k its own slice times K (Note [Contrastive gather]).
  torch::Tensor gather_rows(int replica, const torch::Tensor& local);

  // A barrier for the replicas of one run(), for gather_rows: returns once
  // every replica has called it as often as this one; throws if a replica
  // failed or run()'s timeout passed.
  void arrive_and_wait(const std::string& what);

 private:
  void worker(int replica);

  const int replicas_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable changed_;
  // The current run: its work, how many replicas are still in it, its first failure.
  const std::function<void(int)>* work_ = nullptr;
  int64_t run_generation_ = 0;
  int running_ = 0;
  std::exception_ptr failure_;
  bool stopping_ = false;
  Millis timeout_{kDefaultTimeout};
  // The barrier of gather_rows.
  int64_t barrier_generation_ = 0;
  int arrived_ = 0;
  std::vector<torch::Tensor> rows_;  // each replica's rows, until all have copied them
};

}  // namespace vlm
