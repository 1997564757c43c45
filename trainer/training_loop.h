#pragma once
// The loop vlm-train runs: step, export metrics, report progress, agree on
// stopping, validate every eval.every_steps and at the end, checkpoint every
// checkpoint.every_steps, at the end, and at each best validation (ROOT/best).

#include <atomic>

#include "comm/backend.h"
#include "comm/topology.h"
#include "proto/config.pb.h"
#include "trainer/metrics.h"
#include "trainer/run_files.h"
#include "trainer/trainer.h"
#include "trainer/validation.h"

namespace vlm {

// Runs until loop.steps. Returns false when stopped early because some rank
// was asked to (`stop_requested`, set by SIGTERM/SIGUSR1), after saving.
// `control`: every rank of the job. `validator` (null: eval is off),
// `metrics` and `step_log` may be null.
bool run_training_loop(Trainer& trainer, const TrainConfig& config, const Topology& topology, Backend& control,
                       Validator* validator, TrainMetrics* metrics, StepLog* step_log,
                       const std::atomic<int>& stop_requested);

}  // namespace vlm
