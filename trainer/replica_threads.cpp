#include "trainer/replica_threads.h"

#include <glog/logging.h>

#include "comm/mpi_check.h"
#include "comm/threads.h"

namespace vlm {
namespace {

struct GatherReplicaRows : public torch::autograd::Function<GatherReplicaRows> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor local, ReplicaThreads* threads,
                               int64_t replica, std::vector<torch::Tensor>* slots) {
    ctx->saved_data["offset"] = replica * local.size(0);
    ctx->saved_data["rows"] = local.size(0);
    ctx->saved_data["size"] = static_cast<int64_t>(threads->size());
    (*slots)[static_cast<size_t>(replica)] = local.detach();
    threads->arrive_and_wait("gather_rows (every replica's rows are in)");
    torch::Tensor gathered = torch::cat(*slots);
    threads->arrive_and_wait("gather_rows (every replica has copied them)");  // the slots may be reused
    return gathered;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t offset = ctx->saved_data["offset"].toInt(), rows = ctx->saved_data["rows"].toInt();
    const double size = static_cast<double>(ctx->saved_data["size"].toInt());
    return {grads[0].narrow(0, offset, rows) * size, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

ReplicaThreads::ReplicaThreads(int replicas) : replicas_(replicas), rows_(static_cast<size_t>(replicas)) {
  for (int k = 1; k < replicas_; ++k) threads_.emplace_back([this, k] { worker(k); });
}

ReplicaThreads::~ReplicaThreads() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (auto& t : threads_) t.join();
}

void ReplicaThreads::worker(int replica) {
  const OneComputeThread one;  // for this thread's life
  int64_t seen = 0;
  while (true) {
    const std::function<void(int)>* work = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || run_generation_ != seen; });
      if (stopping_) return;
      seen = run_generation_;
      work = work_;
    }
    std::exception_ptr failed;
    try {
      (*work)(replica);
    } catch (...) {
      failed = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (failed && !failure_) failure_ = failed;
    --running_;
    changed_.notify_all();
  }
}

void ReplicaThreads::run(const std::function<void(int)>& work, Millis timeout) {
  const OneBlasThread one_blas;  // the replicas call it at once: one thread each, until all are done
  {
    std::lock_guard<std::mutex> lock(mutex_);
    work_ = &work;
    timeout_ = timeout;
    failure_ = nullptr;
    arrived_ = 0;
    running_ = replicas_ - 1;
    ++run_generation_;
  }
  changed_.notify_all();
  std::exception_ptr failed;
  {
    const OneComputeThread one;  // the workers compute with one thread each: so does replica 0
    try {
      work(0);
    } catch (...) {
      failed = std::current_exception();
    }
  }
  std::unique_lock<std::mutex> lock(mutex_);
  if (failed && !failure_) failure_ = failed;
  changed_.notify_all();  // replicas waiting in a barrier for replica 0 give up
  // A replica stuck outside a barrier (a decoder that never returns) must not hang the job.
  if (!changed_.wait_for(lock, timeout, [&] { return running_ == 0; })) {
    LOG(FATAL) << running_ << " of this process's " << replicas_ << " replicas did not finish the step within "
               << timeout.count() / 1000 << " s after replica 0 (comm.timeout_seconds)"
               << (failure_ ? "; replica 0 or another failed first" : "");
  }
  work_ = nullptr;
  for (auto& r : rows_) r = torch::Tensor();
  if (failure_) std::rethrow_exception(failure_);
}

torch::Tensor ReplicaThreads::gather_rows(int replica, const torch::Tensor& local) {
  if (replicas_ == 1) return local;
  return GatherReplicaRows::apply(local, this, static_cast<int64_t>(replica), &rows_);
}

void ReplicaThreads::arrive_and_wait(const std::string& what) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (failure_) throw CommError(what + ": another replica of this process failed");
  const int64_t generation = barrier_generation_;
  if (++arrived_ == replicas_) {
    arrived_ = 0;
    ++barrier_generation_;
    changed_.notify_all();
    return;
  }
  const bool passed =
      changed_.wait_for(lock, timeout_, [&] { return barrier_generation_ != generation || failure_ != nullptr; });
  if (barrier_generation_ != generation) return;
  if (!passed) {
    throw CommError(what + ": " + std::to_string(replicas_ - arrived_) + " of this process's " +
                    std::to_string(replicas_) + " replicas did not arrive within " +
                    std::to_string(timeout_.count() / 1000) + " s (comm.timeout_seconds)");
  }
  throw CommError(what + ": another replica of this process failed");
}

}  // namespace vlm
