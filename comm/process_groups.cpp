#include "comm/process_groups.h"

#include <glog/logging.h>

#include "comm/mpi_backend.h"
#include "comm/mpi_check.h"
#include "comm/peer_monitor.h"

namespace vlm {

ProcessGroups::ProcessGroups(const Topology& topology, BackendOptions options, MPI_Comm world)
    : world_(world), options_(options) {
  control_ = std::make_unique<MpiBackend>(world, "world", options.init_timeout);
  checkpoint_ = std::make_unique<MpiBackend>(world, "checkpoint", options.init_timeout);
  data_parallel_ = split(topology.stage(), topology.dp_rank(), "dp(stage " + std::to_string(topology.stage()) + ")");
  pipeline_ = split(topology.dp_rank(), topology.stage(), "pp(dp_rank " + std::to_string(topology.dp_rank()) + ")");
}

ProcessGroups::~ProcessGroups() = default;

MPI_Comm ProcessGroups::split_communicator(int color, int key, const std::string& name) const {
  MPI_Comm comm = MPI_COMM_NULL;
  run_with_deadline("setup", "comm_split", "MPI_Comm_split for group " + name + " (" + process_label() + ")",
                    control_->members(), options_.init_timeout, [&] {
                      VLM_MPI_CHECK(MPI_Comm_split(world_, color == kNotMember ? MPI_UNDEFINED : color, key, &comm));
                    });
  return comm;
}

std::unique_ptr<Backend> ProcessGroups::split(int color, int key, const std::string& name) const {
  MPI_Comm comm = split_communicator(color, key, name);
  if (comm == MPI_COMM_NULL) return nullptr;
  auto backend = make_backend(options_, comm, name);  // duplicates comm
  VLM_MPI_CHECK(MPI_Comm_free(&comm));
  return backend;
}

}  // namespace vlm
