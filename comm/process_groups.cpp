#include "comm/process_groups.h"

#include <glog/logging.h>

#include "comm/mpi_check.h"

namespace vlm {

ProcessGroups::ProcessGroups(const Topology& topology) {
  VLM_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, topology.stage(), topology.dp_rank(), &data_parallel_));
  VLM_MPI_CHECK(MPI_Comm_set_errhandler(data_parallel_, MPI_ERRORS_RETURN));
  VLM_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, topology.dp_rank(), topology.stage(), &pipeline_));
  VLM_MPI_CHECK(MPI_Comm_set_errhandler(pipeline_, MPI_ERRORS_RETURN));
}

ProcessGroups::~ProcessGroups() {
  if (data_parallel_ != MPI_COMM_NULL && MPI_Comm_free(&data_parallel_) != MPI_SUCCESS) {
    LOG(ERROR) << "MPI_Comm_free of the data-parallel group failed";
  }
  if (pipeline_ != MPI_COMM_NULL && MPI_Comm_free(&pipeline_) != MPI_SUCCESS) {
    LOG(ERROR) << "MPI_Comm_free of the pipeline group failed";
  }
}

}  // namespace vlm
