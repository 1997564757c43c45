// vlm-train: one worker per rank. Parse, build, train, evaluate, close.

#include <glog/logging.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>

#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"
#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "proto/config_loader.h"
#include "trainer/checkpoint.h"
#include "trainer/checkpoint_writer.h"
#include "trainer/command_line.h"
#include "trainer/evaluate.h"
#include "trainer/metrics.h"
#include "trainer/pipeline_trainer.h"
#include "trainer/progress.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

// Set by SIGTERM/SIGUSR1; acted on at the next step boundary.
std::atomic<int> stop_requested{0};
extern "C" void request_stop(int) { stop_requested.store(1); }

// Whether any rank was asked to stop (a signal may reach only some ranks).
bool any_rank_stopping() {
  int stop = stop_requested.load();
  VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &stop, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  return stop != 0;
}

template <typename AnyTrainer>
void save(AnyTrainer& trainer, const TrainConfig& config, const Topology& topology, TrainMetrics* metrics) {
  const auto start = std::chrono::steady_clock::now();
  const std::string where = config.checkpoint().dir() + "/" + step_directory_name(trainer.steps_done());
  const bool async = config.checkpoint().async();
  trainer.save_checkpoint(config.checkpoint().dir(), config.checkpoint().keep(), async);
  const double stall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  LOG_IF(INFO, topology.is_root()) << "checkpoint " << where << (async ? " started; training stalled " : " saved in ")
                                   << stall << " s";
  if (metrics) metrics->record_checkpoint(trainer.steps_done(), stall);
}

// The loop both trainers share: step, export metrics, report progress,
// checkpoint every checkpoint.every_steps and at the end. Returns false when
// stopped early by a signal (after saving).
template <typename AnyTrainer>
bool run_steps(AnyTrainer& trainer, const TrainConfig& config, const Topology& topology, TrainMetrics* metrics) {
  const LoopConfig::Progress style = config.loop().progress();
  const bool bar = style == LoopConfig::BAR || (style == LoopConfig::AUTO && is_interactive(stdout));
  ProgressReporter progress(config.loop().steps(), config.loop().log_every(), bar, stdout);
  const bool checkpoints = !config.checkpoint().dir().empty();
  const int every = config.checkpoint().every_steps();
  while (trainer.steps_done() < config.loop().steps()) {
    const StepStats stats = trainer.train_step();
    if (metrics) {
      metrics->record_step(stats);
      metrics->record_communication(trainer.communication_totals());
    }
    if (topology.is_root()) progress.report(stats);
    const bool last = trainer.steps_done() == config.loop().steps();
    const bool stopping = any_rank_stopping();
    if (checkpoints && (last || stopping || (every > 0 && trainer.steps_done() % every == 0))) {
      save(trainer, config, topology, metrics);
    }
    if (last || stopping) trainer.wait_for_checkpoint();  // the final checkpoint is complete before exit
    if (stopping && !last) {
      LOG_IF(INFO, topology.is_root()) << "stopped by a signal after step " << trainer.steps_done()
                                       << (checkpoints ? "; resume with --resume latest" : "");
      return false;
    }
  }
  return true;
}

std::unique_ptr<TrainMetrics> start_metrics(const TrainConfig& config, const Topology& topology) {
  if (!config.metrics().enabled()) return nullptr;
  auto metrics = std::make_unique<TrainMetrics>(config.metrics(), topology);
  LOG(INFO) << "metrics on http://" << metrics->address() << "/metrics";
  return metrics;
}

// Either trainer: continue from a checkpoint if --resume was given.
template <typename AnyTrainer>
void resume_if_asked(AnyTrainer& trainer, const TrainConfig& config, const Topology& topology, const std::string& which) {
  if (which.empty()) return;
  const std::string from = resolve_checkpoint(config.checkpoint().dir(), which);
  trainer.load_checkpoint(from);
  LOG_IF(INFO, topology.is_root()) << "resumed from " << from << " at step " << trainer.steps_done();
}

int train_pipeline(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups,
                   const TrainingData& data, const std::string& resume) {
  PipelineTrainer trainer(config, topology, groups, data);
  resume_if_asked(trainer, config, topology, resume);
  std::string layout;
  for (size_t s = 0; s + 1 < trainer.stage_starts().size(); ++s) {
    layout += " [" + std::to_string(trainer.stage_starts()[s]) + ", " + std::to_string(trainer.stage_starts()[s + 1]) + ")";
  }
  LOG_IF(INFO, topology.is_root()) << "pipeline stages (blocks):" << layout;
  auto metrics = start_metrics(config, topology);
  if (!run_steps(trainer, config, topology, metrics.get())) return 0;
  if (config.eval().enabled()) {
    VlmModel whole = trainer.gather_model();  // on rank 0
    if (topology.is_root()) {
      std::printf("%s", evaluate(whole, data, config.eval()).summary().c_str());
      std::fflush(stdout);
    }
  }
  VLM_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  return 0;
}

int train(const CommandLine& cli) {
  const TrainConfig config = load_config(cli.config_path, cli.overrides);
  const Topology topology = make_topology(detect_process(), config.parallel().pipeline_stages(),
                                          config.parallel().data_parallel());
  const int threads = threads_per_rank(config.parallel().threads_per_rank(), topology.process.local_size,
                                       static_cast<int>(std::thread::hardware_concurrency()));
  apply_thread_count(threads);
  LOG_IF(INFO, topology.is_root()) << "resolved config (" << cli.config_path << "):\n" << resolved_config_text(config);
  LOG(INFO) << topology.describe() << ", " << threads << " compute threads";

  ProcessGroups groups(topology);
  const auto data = load_training_data(config.data());
  if (topology.pipeline_stages > 1) return train_pipeline(config, topology, groups, *data, cli.resume);
  Trainer trainer(config, topology, groups.data_parallel(), *data);
  resume_if_asked(trainer, config, topology, cli.resume);
  auto metrics = start_metrics(config, topology);
  if (metrics) metrics->record_buckets(trainer.bucket_bytes());
  if (!run_steps(trainer, config, topology, metrics.get())) return 0;
  if (config.eval().enabled() && topology.is_root()) {
    std::printf("%s", evaluate(trainer.model(), *data, config.eval()).summary().c_str());
    std::fflush(stdout);
  }
  VLM_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  std::signal(SIGTERM, vlm::request_stop);
  std::signal(SIGUSR1, vlm::request_stop);
  vlm::MpiRuntime mpi(&argc, &argv);
  try {
    const vlm::CommandLine cli = vlm::parse_command_line(argc, argv);
    if (cli.help) {
      if (mpi.rank() == 0) std::printf("%s", vlm::kTrainUsage);
      return 0;
    }
    return vlm::train(cli);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlm-train: error on %s: %s\n", vlm::process_label().c_str(), e.what());
    // One failed rank must not leave the others blocked in a collective.
    if (mpi.size() > 1) vlm::MpiRuntime::abort_job(1);
    return 1;
  }
}
