#include "comm/topology.h"

#include <sched.h>

#include <cstdlib>
#include <vector>

#include "comm/mpi_check.h"
#include "comm/peer_monitor.h"

namespace vlm {

std::string Topology::describe() const {
  return "rank " + std::to_string(rank()) + "/" + std::to_string(world_size()) + " (stage " +
         std::to_string(stage()) + "/" + std::to_string(pipeline_stages) + ", dp_rank " +
         std::to_string(dp_rank()) + "/" + std::to_string(data_parallel) + ", local " +
         std::to_string(process.local_rank) + "/" + std::to_string(process.local_size) + ")";
}

Topology make_topology(const ProcessInfo& process, int pipeline_stages, int data_parallel) {
  const int world = process.world_size;
  if (pipeline_stages < 1) {
    throw TopologyError("parallel.pipeline_stages(" + std::to_string(pipeline_stages) + ") must be >= 1");
  }
  if (data_parallel == 0) {
    if (world % pipeline_stages != 0) {
      throw TopologyError("world_size(" + std::to_string(world) + ") is not divisible by "
                          "parallel.pipeline_stages(" + std::to_string(pipeline_stages) +
                          "); launch a multiple of pipeline_stages ranks");
    }
    data_parallel = world / pipeline_stages;
  }
  if (pipeline_stages * data_parallel != world) {
    throw TopologyError("world_size(" + std::to_string(world) + ") != parallel.pipeline_stages(" +
                        std::to_string(pipeline_stages) + ") x parallel.data_parallel(" +
                        std::to_string(data_parallel) + ") = " +
                        std::to_string(pipeline_stages * data_parallel) +
                        "; launch that many ranks or set parallel.data_parallel=0 to derive it");
  }
  return Topology{process, pipeline_stages, data_parallel};
}

void check_launcher_environment(const ProcessInfo& mpi, const char* (*getenv_fn)(const char*)) {
  struct Source {
    const char* rank;
    const char* size;
  };
  for (const Source& s : {Source{"SLURM_PROCID", "SLURM_NTASKS"}, Source{"RANK", "WORLD_SIZE"}}) {
    const char* size = getenv_fn(s.size);
    const char* rank = getenv_fn(s.rank);
    if (size == nullptr || rank == nullptr) continue;
    if (mpi.world_size == 1 && std::atoi(size) > 1) {
      throw TopologyError(std::string(s.rank) + "=" + rank + " " + s.size + "=" + size +
                          " but MPI reports rank 0 of 1: the launcher started " + size +
                          " separate single-process MPI jobs, not one. HINT: use mpirun or vlm-launch, "
                          "or srun --mpi=pmix (or pmi2) under Slurm");
    }
  }
}

ProcessInfo detect_process(std::chrono::milliseconds timeout) {
  ProcessInfo info;
  VLM_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info.rank));
  VLM_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info.world_size));
  MPI_Comm host;
  std::vector<int> everyone(static_cast<size_t>(info.world_size));
  for (int r = 0; r < info.world_size; ++r) everyone[r] = r;
  run_with_deadline("setup", "comm_split_type", "MPI_Comm_split_type (ranks per host) (" + process_label() + ")",
                    everyone, timeout, [&] {
                      VLM_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &host));
                    });
  VLM_MPI_CHECK(MPI_Comm_rank(host, &info.local_rank));
  VLM_MPI_CHECK(MPI_Comm_size(host, &info.local_size));
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (sched_getaffinity(0, sizeof mine, &mine) != 0) CPU_SET(0, &mine);
  std::vector<cpu_set_t> masks(static_cast<size_t>(info.local_size));
  run_with_deadline("setup", "allgather", "MPI_Allgather (CPU affinity on this host) (" + process_label() + ")",
                    everyone, timeout, [&] {
                      VLM_MPI_CHECK(MPI_Allgather(&mine, sizeof mine, MPI_BYTE, masks.data(), sizeof mine, MPI_BYTE, host));
                    });
  info.cpus = CPU_COUNT(&mine);
  info.cpu_sharers = 0;
  for (cpu_set_t& other : masks) {
    cpu_set_t both;
    CPU_AND(&both, &mine, &other);
    if (CPU_COUNT(&both) > 0) ++info.cpu_sharers;
  }
  VLM_MPI_CHECK(MPI_Comm_free(&host));
  check_launcher_environment(info, [](const char* name) -> const char* { return std::getenv(name); });
  return info;
}

}  // namespace vlm
