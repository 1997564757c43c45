#pragma once
// The groups of a topology (DESIGN: rank topology), each with its backend,
// created once at start-up. Creating them is collective over the world and
// bounded by the start-up timeout.
//  - control:    every rank, always MPI on the host: the per-step stop
//                agreement, the config check, barriers, evaluation sums.
//                Control traffic never waits behind tensors on a GPU.
//  - checkpoint: every rank, MPI: the agreement and gathers of a save, issued
//                by the asynchronous writer's thread, so they never interleave
//                with the training thread's control traffic.
//  - data_parallel: the replicas of this rank's pipeline stage.
//  - pipeline:   the stages of this rank's replica, in stage order.
// Groups of stages that share tensors are made with split().

#include <mpi.h>

#include <memory>
#include <string>

#include "comm/backend.h"
#include "comm/topology.h"

namespace vlm {

class ProcessGroups {
 public:
  // `world` holds the topology's ranks (MPI_COMM_SELF for a one-process
  // topology inside a larger job, as tests do). `options` are for the
  // data-parallel, pipeline and split groups (control and checkpoint are MPI).
  ProcessGroups(const Topology& topology, BackendOptions options = {}, MPI_Comm world = MPI_COMM_WORLD);
  ~ProcessGroups();
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;

  Backend& control() const { return *control_; }
  Backend& checkpoint() const { return *checkpoint_; }
  Backend& data_parallel() const { return *data_parallel_; }
  Backend& pipeline() const { return *pipeline_; }
  // Where the data-parallel, pipeline and split groups' tensors live.
  const torch::Device& device() const { return options_.device; }

  static constexpr int kNotMember = -1;
  // Collective over the world (every rank calls it, in the same order): the
  // ranks passing the same `color` form a group ordered by `key`; nullptr
  // for a rank passing kNotMember.
  std::unique_ptr<Backend> split(int color, int key, const std::string& name) const;

 private:
  MPI_Comm split_communicator(int color, int key, const std::string& name) const;

  MPI_Comm world_;
  BackendOptions options_;
  std::unique_ptr<Backend> control_, checkpoint_, data_parallel_, pipeline_;
};

}  // namespace vlm
