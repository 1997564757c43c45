#pragma once
// The MPI backend for CPU tensors.
//
// Note [MPI progress]: Open MPI 4.1 has no asynchronous progress thread, so a
// nonblocking collective advances only inside MPI calls. This backend therefore
// owns a communication thread that runs each operation's (blocking, tuned) MPI
// call in issue order while the caller goes on computing, like c10d's
// ProcessGroupMPI. It works on its own duplicate of the group's communicator,
// so it never interleaves with MPI calls the training thread makes itself.
//
// Note [Signature check]: before each collective the ranks agree on a
// signature (operation, dtype, element count, root) with one small allreduce;
// a mismatch fails the operation on every rank with both signatures in the
// message, instead of hanging or producing garbage.
//
// Note [Large messages]: MPI counts are ints, and some transports mishandle
// single messages over 2 GiB. Tensors larger than max_bytes_per_call (1 GiB)
// travel in pieces, one MPI call each, within one operation.

#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "comm/backend.h"

namespace vlm {

constexpr int64_t kDefaultMaxBytesPerCall = int64_t{1} << 30;

class MpiBackend : public Backend {
 public:
  // Duplicates `group` (collective; bounded by `init_timeout`); `group_name`
  // appears in every error ("dp(stage 0)").
  MpiBackend(MPI_Comm group, std::string group_name, Millis init_timeout = kDefaultInitTimeout);
  ~MpiBackend() override;
  MpiBackend(const MpiBackend&) = delete;
  MpiBackend& operator=(const MpiBackend&) = delete;

  std::string name() const override { return "mpi"; }

  WorkPtr allreduce(torch::Tensor tensor, const AllreduceOptions& options) override;
  WorkPtr broadcast(torch::Tensor tensor, const BroadcastOptions& options) override;
  WorkPtr allgather(torch::Tensor input, torch::Tensor output, const CollectiveOptions& options) override;
  WorkPtr reduce_scatter(torch::Tensor input, torch::Tensor output, const AllreduceOptions& options) override;
  WorkPtr send(torch::Tensor tensor, int destination, const PointToPointOptions& options) override;
  WorkPtr recv(torch::Tensor tensor, int source, const PointToPointOptions& options) override;
  WorkPtr barrier(const CollectiveOptions& options) override;

  // Note [Large messages]; tests lower it to exercise the pieces.
  void set_max_bytes_per_call(int64_t bytes) { max_bytes_per_call_ = bytes; }

 private:
  struct Operation;
  // Queues `run` for the communication thread; `what` names it in errors.
  // With `poll`, `run` only starts requests and the operation completes when
  // `poll` returns true. `kind` and `bytes` feed totals() and the flight
  // recorder; `peer` >= 0 marks point-to-point.
  WorkPtr enqueue(const char* kind, int64_t bytes, std::string what, Millis timeout, int peer, bool sending,
                  std::function<void()> run, std::function<bool()> poll = nullptr);
  WorkPtr point_to_point(bool sending, torch::Tensor tensor, int peer, const PointToPointOptions& options);
  void check_signature(const std::string& what, int64_t op, const torch::Tensor& tensor, int64_t root);
  int64_t elements_per_call(const torch::Tensor& t) const;
  void communication_loop();

  MPI_Comm comm_ = MPI_COMM_NULL;
  int64_t max_bytes_per_call_ = kDefaultMaxBytesPerCall;
  std::mutex mutex_;
  std::condition_variable queued_;
  std::condition_variable exited_signal_;
  std::deque<std::shared_ptr<Operation>> queue_;
  std::atomic<size_t> queue_size_{0};  // queue_.size(), readable without the lock
  bool stopping_ = false;
  bool exited_ = false;
  std::shared_ptr<Operation> running_;  // the operation inside MPI now, if any (under mutex_)
  std::thread thread_;
};

}  // namespace vlm
