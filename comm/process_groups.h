#pragma once
// The MPI communicators of a topology, created once and freed on destruction.

#include <mpi.h>

#include "comm/topology.h"

namespace vlm {

class ProcessGroups {
 public:
  explicit ProcessGroups(const Topology& topology);
  ~ProcessGroups();
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;

  // The data-parallel replicas of this rank's pipeline stage.
  MPI_Comm data_parallel() const { return data_parallel_; }
  // The pipeline stages of this rank's data-parallel replica, in stage order.
  MPI_Comm pipeline() const { return pipeline_; }

 private:
  MPI_Comm data_parallel_ = MPI_COMM_NULL;
  MPI_Comm pipeline_ = MPI_COMM_NULL;
};

}  // namespace vlm
