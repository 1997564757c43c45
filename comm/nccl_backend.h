#pragma once
// The NCCL backend for CUDA tensors (built when VLM_WITH_NCCL).
//
// The ncclUniqueId is created by rank 0 of the group and broadcast over MPI;
// one NCCL communicator per group. Operations run on the backend's own CUDA
// stream, ordered after the caller's compute stream with an event; wait()
// makes the compute stream wait for the operation's event (no host sync), or
// with blocking_wait makes the host wait and raise on error or timeout. A
// watchdog thread checks in-flight operations against their timeouts and, on
// expiry, aborts the communicator and ends the job with a report of who never
// arrived (comm/peer_monitor.h), as c10d's NCCL watchdog does; it also polls
// the communicator's asynchronous errors. The communicator is created
// nonblocking and polled against the start-up timeout.

#include <mpi.h>
#include <nccl.h>

#include <array>

#include "comm/backend.h"

namespace vlm {

// Rank 0 of `group` creates the id; every rank returns the same bytes.
ncclUniqueId bootstrap_nccl_id(MPI_Comm group);

class NcclBackend : public Backend {
 public:
  // Collective over `group`; a member that never joins ends the job after `init_timeout`.
  // `blocking_wait`: wait() blocks the host and raises (comm.blocking_wait).
  NcclBackend(MPI_Comm group, std::string group_name, int device, Millis init_timeout, bool blocking_wait = false);
  ~NcclBackend() override;
  NcclBackend(const NcclBackend&) = delete;
  NcclBackend& operator=(const NcclBackend&) = delete;

  std::string name() const override { return "nccl"; }

  WorkPtr allreduce(torch::Tensor tensor, const AllreduceOptions& options) override;
  WorkPtr broadcast(torch::Tensor tensor, const BroadcastOptions& options) override;
  WorkPtr allgather(torch::Tensor input, torch::Tensor output, const CollectiveOptions& options) override;
  WorkPtr reduce_scatter(torch::Tensor input, torch::Tensor output, const AllreduceOptions& options) override;
  WorkPtr send(torch::Tensor tensor, int destination, const PointToPointOptions& options) override;
  WorkPtr recv(torch::Tensor tensor, int source, const PointToPointOptions& options) override;
  WorkPtr barrier(const CollectiveOptions& options) override;
  WorkPtr send_recv_batch(const std::vector<PointToPointOp>& ops, Millis timeout) override;

 private:
  struct State;
  struct PointToPoint {
    int peer = -1;  // -1: a collective
    bool sending = false;
  };
  // `nccl_call(comm, stream)` enqueues the operation and returns NCCL's result.
  template <typename Launch>
  WorkPtr launch(const char* kind, int64_t bytes, Millis timeout, const std::vector<PointToPoint>& peers,
                 std::vector<torch::Tensor> keep_alive, Launch nccl_call);

  std::unique_ptr<State> state_;
};

}  // namespace vlm
