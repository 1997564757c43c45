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

 private:
  MPI_Comm data_parallel_ = MPI_COMM_NULL;
};

}  // namespace vlm
