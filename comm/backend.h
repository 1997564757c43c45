#pragma once
// comm::Backend: collectives and point-to-point over one process group, in the
// manner of c10d. Every operation is asynchronous and returns a Work; wait()
// blocks until it is done, and rethrows its failure or a timeout naming the
// operation, the group and the rank. A synchronous call is op(...)->wait().

#include <mpi.h>
#include <torch/torch.h>

#include "comm/hang_report.h"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace vlm {

using Millis = std::chrono::milliseconds;

// Start-up and the first step may be slow (compilation, allocation, late
// ranks); later collectives should finish quickly (torchtitan does the same).
constexpr Millis kDefaultInitTimeout{600'000};
constexpr Millis kDefaultTimeout{120'000};

enum class ReduceOp { kSum, kAvg, kMax };

struct AllreduceOptions {
  ReduceOp op = ReduceOp::kSum;
  Millis timeout = kDefaultTimeout;
};

struct BroadcastOptions {
  int root = 0;
  Millis timeout = kDefaultTimeout;
};

struct CollectiveOptions {
  Millis timeout = kDefaultTimeout;
};

struct PointToPointOptions {
  int tag = 0;
  Millis timeout = kDefaultTimeout;
};

// One send or receive of a batch (Backend::send_recv_batch).
struct PointToPointOp {
  bool sending = false;
  torch::Tensor tensor;
  int peer = -1;  // group rank
  int tag = 0;
};

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until done; throws CommError if the operation failed. If its
  // timeout (counted from when it was issued) expires first, the job ends from
  // here with a report of who never arrived (comm/peer_monitor.h).
  virtual void wait() = 0;
  virtual bool is_completed() = 0;
  // How long the operation itself ran (not its time in the queue); 0 until completed.
  virtual double seconds() = 0;
};

using WorkPtr = std::shared_ptr<Work>;

// Totals per operation kind ("allreduce", ...) since the backend started.
struct OperationTotals {
  double seconds = 0;
  int64_t bytes = 0;  // payload bytes this rank contributed
  int64_t count = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  std::map<std::string, OperationTotals> totals() const {
    std::lock_guard<std::mutex> lock(totals_mutex_);
    return totals_;
  }

  virtual std::string name() const = 0;  // "mpi" or "nccl"
  const std::string& group_name() const { return group_name_; }
  int rank() const { return rank_; }  // in this group
  int size() const { return size_; }
  // World rank of each group rank.
  const std::vector<int>& members() const { return members_; }

  // In place; contiguous tensors only (a non-contiguous one is an error).
  virtual WorkPtr allreduce(torch::Tensor tensor, const AllreduceOptions& options = {}) = 0;
  virtual WorkPtr broadcast(torch::Tensor tensor, const BroadcastOptions& options = {}) = 0;
  // output holds size() x input.numel() elements; rank r's input lands at r x numel.
  virtual WorkPtr allgather(torch::Tensor input, torch::Tensor output, const CollectiveOptions& options = {}) = 0;
  // input holds size() x output.numel() elements; output = reduction of every rank's slice r.
  virtual WorkPtr reduce_scatter(torch::Tensor input, torch::Tensor output,
                                 const AllreduceOptions& options = {}) = 0;
  virtual WorkPtr send(torch::Tensor tensor, int destination, const PointToPointOptions& options = {}) = 0;
  virtual WorkPtr recv(torch::Tensor tensor, int source, const PointToPointOptions& options = {}) = 0;
  virtual WorkPtr barrier(const CollectiveOptions& options = {}) = 0;
  // Starts every send and receive of `ops` together, so that their order
  // between two ranks cannot deadlock (two ranks that each send, then
  // receive, a message larger than NCCL buffers would). NCCL: one
  // ncclGroupStart/End; MPI: nonblocking requests. One Work for all of them.
  virtual WorkPtr send_recv_batch(const std::vector<PointToPointOp>& ops, Millis timeout);

 protected:
  // `group_name` appears in every error ("dp(stage 0)").
  Backend(MPI_Comm group, std::string group_name);
  // "allgather(float x 12) on group dp(stage 0), rank 1 of 2 (host:pid)".
  std::string describe_on_group(const std::string& what) const;
  // What waiting for an operation of this group means, for a hang report:
  // `channel` is its flight-recorder channel (Note [Flight recorder]), `peer`
  // the other rank of a send or recv (-1 for collectives).
  StuckOperation stuck_operation(const std::string& op, const std::string& description, int64_t seq,
                                 const std::string& channel, int peer, bool sending) const;
  // The flight-recorder channel of an operation: the group's for
  // collectives, "<group>/send:<peer>" and "<group>/recv:<peer>" for point-to-point.
  std::string channel(int peer = -1, bool sending = false) const;
  // `whole` holds size() x part.numel() elements of part's dtype (allgather, reduce_scatter).
  void check_group_multiple(const std::string& what, const torch::Tensor& whole, const char* whole_name,
                            const torch::Tensor& part, const char* part_name) const;
  // Implementations call this when an operation completes.
  void record(const std::string& op, double seconds, int64_t bytes) {
    std::lock_guard<std::mutex> lock(totals_mutex_);
    OperationTotals& t = totals_[op];
    t.seconds += seconds;
    t.bytes += bytes;
    ++t.count;
  }

 private:
  std::string group_name_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> members_;
  mutable std::mutex totals_mutex_;
  std::map<std::string, OperationTotals> totals_;
};

enum class BackendKind {
  kAuto,  // NCCL for CUDA tensors, MPI otherwise
  kMpi,
  kNccl,
};

struct BackendOptions {
  BackendKind kind = BackendKind::kAuto;
  torch::Device device = torch::kCPU;  // a CUDA device without an index: the current one
  Millis init_timeout = kDefaultInitTimeout;
  // NCCL: wait() blocks the host and raises on error or timeout (comm.blocking_wait).
  bool blocking_wait = false;
};

// The backend for `group` and tensors on `options.device`. Asking for NCCL
// without a usable GPU, or in a build without NCCL, is a CommError that says
// why. Collective over `group`; a member that never joins ends the job after
// `init_timeout` with a report naming it.
std::unique_ptr<Backend> make_backend(const BackendOptions& options, MPI_Comm group, const std::string& group_name);

// A Work that is already done (a group of one has nothing to exchange).
WorkPtr completed_work();

}  // namespace vlm
