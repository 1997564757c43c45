#pragma once
// Where this process sits: world = pipeline_stages x data_parallel. Rank r is
// pipeline stage r / dp and DP rank r % dp (DP innermost, as Megatron orders it).

#include <chrono>
#include <stdexcept>
#include <string>

namespace vlm {

class TopologyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What the launcher told this process.
struct ProcessInfo {
  int rank = 0;        // in the world
  int world_size = 1;
  int local_rank = 0;  // among the ranks on this host
  int local_size = 1;
  int cpus = 1;         // CPUs this process may run on (sched_getaffinity: what Slurm or mpirun binding allows)
  int cpu_sharers = 1;  // local ranks (this one included) whose allowed CPUs overlap this one's
};

struct Topology {
  ProcessInfo process;
  int pipeline_stages = 1;
  int data_parallel = 1;

  int rank() const { return process.rank; }
  int world_size() const { return process.world_size; }
  int stage() const { return process.rank / data_parallel; }
  int dp_rank() const { return process.rank % data_parallel; }
  bool is_root() const { return process.rank == 0; }
  std::string describe() const;
};

// Validates and builds the topology. `data_parallel` 0 means world / stages.
// Messages show the arithmetic: "world_size(6) != pipeline_stages(4) x data_parallel(2)".
Topology make_topology(const ProcessInfo& process, int pipeline_stages, int data_parallel);

// Rank, size and local rank/size from MPI (local = ranks sharing this host's
// memory); MPI is the truth. check_launcher_environment() compares it with
// Slurm's (SLURM_PROCID/NTASKS) and torchrun-style (RANK/WORLD_SIZE) variables
// for one failure only: a process alone in its MPI world while they say there
// are several means the launcher did not start one MPI job (srun without
// --mpi), and is an error. Other differences are not: ranks that mpirun
// started inside a Slurm allocation inherit the batch step's SLURM_PROCID.
// Also finds which local ranks share CPUs (an allgather of affinity masks on
// this host).
// Collective over the world: a rank that never joins ends the job after `timeout`.
ProcessInfo detect_process(std::chrono::milliseconds timeout = std::chrono::milliseconds(600'000));

// The launcher check above as a pure function of the environment (for tests).
void check_launcher_environment(const ProcessInfo& mpi, const char* (*getenv_fn)(const char*));

}  // namespace vlm
