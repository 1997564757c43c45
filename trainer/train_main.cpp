// vlm-train: one worker per rank. Parse, check, build, train, evaluate, close.

#include <glog/logging.h>
#include <pthread.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>

#include "checkpoint/format.h"
#include "comm/error_text.h"
#include "comm/fault_injection.h"
#include "comm/flight_recorder.h"
#include "comm/host_allocator.h"
#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"
#include "comm/peer_monitor.h"
#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "data/idx.h"
#include "proto/config_loader.h"
#include "trainer/command_line.h"
#include "trainer/evaluate.h"
#include "trainer/metrics.h"
#include "trainer/run_files.h"
#include "trainer/setup.h"
#include "trainer/startup.h"
#include "trainer/trainer.h"
#include "trainer/training_loop.h"
#include "trainer/validation.h"

namespace vlm {
namespace {

// Set by SIGTERM/SIGUSR1; acted on at the next step boundary.
std::atomic<int> stop_requested{0};

// Note [Stop signals on one thread]: SIGTERM and SIGUSR1 are blocked in every
// thread (set before any thread starts: threads inherit the mask) and taken by
// one thread that waits for them. A handler would run on whichever thread the
// signal lands on, in the middle of MPI, oneDNN's generated code or a system
// call. With a handler, a stop signal under load was followed by "double
// free or corruption" in the step it landed in (1 run in 30 of
// checkpoint_cli's preemption case with both cores busy; CI saw it twice).
void take_stop_signals_on_one_thread() {
  sigset_t stops;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGUSR1);
  CHECK_EQ(pthread_sigmask(SIG_BLOCK, &stops, nullptr), 0);
  std::thread([stops] {
    int signal = 0;
    while (sigwait(&stops, &signal) == 0) stop_requested.store(1);
  }).detach();
}

std::unique_ptr<TrainMetrics> start_metrics(const TrainConfig& config, const Topology& topology) {
  if (!config.metrics().enabled()) return nullptr;
  const std::string run_dir = run_directory(config);
  auto metrics = std::make_unique<TrainMetrics>(config.metrics(), topology, run_dir);
  write_endpoint_file(run_dir, topology, metrics->scrape_address());
  LOG(INFO) << "metrics on http://" << metrics->scrape_address() << "/metrics";
  return metrics;
}

// Prints the error, naming this rank. With other ranks it then ends every
// rank (end_job: flight records, MPI_Abort), so that none is left blocked in
// a collective; it returns only in a one-process job, with the exit status:
// kExitBadInput when the command's input is wrong (command line, config,
// ranks for the layout, a checkpoint made for another config, data files or a
// tokenizer that cannot be read as such), so that a restart would fail the
// same way and vlm-launch does not try one; 1 for anything else.
int report_error(const std::exception& e, const MpiRuntime& mpi) {
  const bool bad_input = dynamic_cast<const UsageError*>(&e) != nullptr ||
                         dynamic_cast<const ConfigError*>(&e) != nullptr ||
                         dynamic_cast<const TopologyError*>(&e) != nullptr ||
                         dynamic_cast<const std::invalid_argument*>(&e) != nullptr ||  // e.g. batch and layout checks
                         dynamic_cast<const CheckpointMismatch*>(&e) != nullptr ||
                         dynamic_cast<const DataError*>(&e) != nullptr;
  const int exit_code = bad_input ? kExitBadInput : 1;
  const std::string message = "vlm-train: error on " + process_label() + ": " + error_text(e);
  std::fprintf(stderr, "%s\n", message.c_str());
  if (mpi.size() > 1) end_job(message, exit_code);
  return exit_code;
}

int train(const CommandLine& cli, MpiRuntime& mpi) {
  set_run_directory(run_directory(TrainConfig()));  // a bad config's flight records: vlm-launch's run dir, else here
  const TrainConfig config = load_config(cli.config_path, cli.overrides);
  const Millis init_timeout = seconds_to_millis(config.comm().init_timeout_seconds());
  const Millis timeout = seconds_to_millis(config.comm().timeout_seconds());
  FlightRecorder::instance().set_capacity(static_cast<size_t>(config.comm().flight_recorder_entries()));
  create_run_directory(config);
  set_run_directory(run_directory(config));
  mpi.set_shutdown_timeout(timeout);
  const Topology topology = make_topology(detect_process(init_timeout), config.parallel().pipeline_stages(),
                                          config.parallel().data_parallel());
  const int threads = threads_per_rank(config.parallel().threads_per_rank(), topology.process.cpus,
                                       topology.process.cpu_sharers);
  apply_thread_count(threads);
  LOG_IF(INFO, topology.is_root()) << "resolved config (" << cli.config_path << "):\n" << resolved_config_text(config);
  LOG(INFO) << topology.describe() << ", " << threads << " compute threads";

  // Start-up: everything that would otherwise fail later fails now.
  const torch::Device device = use_device(device_request(config.device().kind()), topology.process);
  LOG(INFO) << "computing on " << device << (config.device().precision() == DeviceConfig::BF16 ? " (bf16 autocast)" : "");
  const int replicas = config.parallel().replicas_per_process();
  // More compute threads than CPUs only wait for each other (and each replica holds its own activations).
  LOG_IF(WARNING, threads > topology.process.cpus)
      << "parallel.threads_per_rank(" << threads << ") exceeds the " << topology.process.cpus
      << " CPUs this process may use: the threads will wait for each other. HINT: set it to "
      << topology.process.cpus << " or fewer, or 0 for the CPUs there are";
  LOG_IF(WARNING, replicas > topology.process.cpus)
      << "parallel.replicas_per_process(" << replicas << ") exceeds the " << topology.process.cpus
      << " CPUs this process may use: the replicas will take turns, and each holds its own activations";
  LOG_IF(INFO, replicas > 1) << replicas << " replicas of the step at once, one compute thread each";
  LOG_IF(INFO, replicas == 1 && threads > 1 && threads <= topology.process.cpus && topology.world_size() == 1 && device.is_cpu())
      << "HINT: one process computing with " << threads << " threads is slower than " << threads
      << " one-thread ranks; --set parallel.replicas_per_process=" << threads
      << " runs as many replicas of the step at once and is about as fast (docs/performance.md)";
  fault_point("comm-setup");  // a test stops a rank here: the others wait in communicator creation
  const ProcessGroups groups(topology, backend_options(config, device));
  fault_point("start-up");  // a test stops a rank here
  check_same_config(groups.control(), config, cli.resume, cli.init_from, init_timeout);
  std::unique_ptr<CheckpointDirectoryLock> checkpoint_lock;
  std::string resume, init_from;  // the step directory to resume from; the checkpoint or model to start from
  try {
    checkpoint_lock = lock_checkpoint_folder(config, topology);
    resume = agree_on_resume(groups.control(), config, cli.resume, init_timeout);
    init_from = resolve_init_from(config, cli.init_from, resume);
    check_checkpoint_folder(config, topology, resume);
  } catch (const CheckpointFolderInUse&) {
    throw;  // another job's, which may end: a retry may pass (exit 1)
  } catch (const CheckpointError& e) {
    // A path that holds no checkpoint, a folder that cannot be written or holds another run's: a retry would fail
    // again, or (vlm-launch's --resume auto) train from somewhere the command did not say.
    throw CheckpointMismatch(e.what());
  }
  LOG_IF(WARNING, topology.is_root() && config.checkpoint().dir().empty())
      << "checkpoint.dir is not set: no checkpoint is saved, so a stop signal, a failure, a vlm-launch restart or a "
         "Slurm requeue starts again from step 0. HINT: --set checkpoint.dir=DIR (on a file system every node shares)";
  LOG_IF(INFO, topology.is_root() && cli.resume == "auto") << "--resume auto: " << (resume.empty() ? "no checkpoint in checkpoint.dir, starting fresh" : "resuming from " + resume);
  const auto metrics = start_metrics(config, topology);
  const auto step_log = topology.is_root() ? std::make_unique<StepLog>(run_directory(config), !resume.empty()) : nullptr;
  const auto data = load_training_data(config.data(), config.eval());

  Trainer trainer(config, topology, groups, *data);
  // Note [Errors end the job with the trainer whole]: an error from here on ends
  // the job before the trainer's destructors run, which would join its threads
  // (a checkpoint writer may wait in a collective) and free tensors a step
  // still uses. Unwinding first, a crash in ~Trainer once hid the error's
  // message (CI, rank 1).
  try {
    if (!resume.empty()) {
      trainer.load_checkpoint(resume);
      LOG_IF(INFO, topology.is_root()) << "resumed from " << resume << " at step " << trainer.steps_done()
                                       << (cli.init_from.empty() ? "" : " (--init-from applies only to a fresh start)");
      // Not an error: a requeued job whose run had finished ends again with exit status 0.
      LOG_IF(WARNING, topology.is_root() && trainer.steps_done() >= config.loop().steps())
          << "nothing left to train: the checkpoint is at step " << trainer.steps_done() << " and loop.steps is "
          << config.loop().steps() << " (its evaluation ran when it got there). HINT: raise loop.steps to train further";
    } else if (!init_from.empty()) {
      try {
        trainer.init_from(init_from);
      } catch (const CheckpointError& e) {
        throw CheckpointMismatch(e.what());  // the command's input: a retry would start from scratch
      }
      LOG_IF(INFO, topology.is_root()) << "a new run from the weights of " << init_from;
    }
    std::unique_ptr<Validator> validator;
    if (data->validation_set) {
      validator = std::make_unique<Validator>(*data->validation_set, *data->tokenizer, config.eval());
    }
    std::string layout;
    for (size_t s = 0; s + 1 < trainer.stage_starts().size(); ++s) {
      layout += " [" + std::to_string(trainer.stage_starts()[s]) + ", " + std::to_string(trainer.stage_starts()[s + 1]) + ")";
    }
    LOG_IF(INFO, topology.is_root() && topology.pipeline_stages > 1) << "pipeline stages (blocks):" << layout;
    LOG_IF(INFO, topology.is_root()) << "optimizer state: " << trainer.optimizer_state_bytes() << " bytes on rank 0"
                                     << (config.optim().zero_stage() == 1 ? " (ZeRO-1: its shard of its stage's)" : "");
    if (metrics) metrics->record_buckets(trainer.bucket_bytes());
    clear_checkpoint_folder(groups.control(), config, resume, init_timeout);  // start-up went well: now it may delete

    const bool finished_before = trainer.steps_done() >= config.loop().steps();  // a requeued job that had ended
    if (run_training_loop(trainer, config, topology, groups.control(), validator.get(), metrics.get(),
                          step_log.get(), stop_requested) &&
        !finished_before && config.eval().enabled() && reads_fashion_canvas(*data)) {
      VlmModel whole = trainer.whole_model();
      const EvalResult result = evaluate(whole, *data, config.eval(), groups.control(), timeout);
      if (topology.is_root()) {
        std::printf("%s", result.summary().c_str());
        std::fflush(stdout);
      }
    }
    set_phase("end of the job");
    fault_point("end");  // a test stops a rank here
    groups.control().barrier({timeout})->wait();  // every rank reached the end: MPI_Finalize will not wait
    return 0;
  } catch (const std::exception& e) {
    return report_error(e, mpi);  // with other ranks: ends the job, never returns
  }
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) {
  vlm::keep_freed_memory_for_reuse();  // Note [Host allocator]
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  vlm::take_stop_signals_on_one_thread();  // before any other thread starts
  vlm::MpiRuntime mpi(&argc, &argv);
  try {
    const vlm::CommandLine cli = vlm::parse_command_line(argc, argv);
    if (cli.help) {
      if (mpi.rank() == 0) std::printf("%s", vlm::kTrainUsage);
      return 0;
    }
    return vlm::train(cli, mpi);
  } catch (const std::exception& e) {
    return vlm::report_error(e, mpi);  // with other ranks: ends the job, never returns
  }
}
