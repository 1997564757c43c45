#include "trainer/metrics.h"

#include <torch/version.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include "proto/config_loader.h"
#include "trainer/trainer.h"
#include "trainer/validation.h"

namespace vlm {
namespace {

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double resident_bytes() {
  long pages_total = 0, pages_resident = 0;
  std::ifstream("/proc/self/statm") >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

int restarts_from_environment() {
  for (const char* name : {"VLM_RESTART_COUNT", "SLURM_RESTART_COUNT"}) {
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') return std::atoi(value);
  }
  return 0;
}

TrainMetrics::TrainMetrics(const MetricsConfig& config, const Topology& topology, const std::string& run_dir)
    : registry_(std::make_shared<prometheus::Registry>()), pipeline_(topology.pipeline_stages > 1) {
  const int port = config.port_base() == 0 ? 0 : config.port_base() + topology.process.local_rank;
  if (port > 65535) {  // past the last port, the server would pick one of its own: refuse instead
    throw ConfigError("metrics.port_base(" + std::to_string(config.port_base()) + ") + local rank(" +
                      std::to_string(topology.process.local_rank) + ") = " + std::to_string(port) +
                      " is past port 65535. HINT: set --set metrics.port_base=N with N + ranks per host - 1 <= "
                      "65535, or 0 for any free port");
  }
  try {
    server_ = std::make_unique<MetricsServer>(config.bind_address(), port, registry_);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(e.what()) + " (metrics.port_base(" + std::to_string(config.port_base()) +
                             ") + local rank(" + std::to_string(topology.process.local_rank) +
                             ")). HINT: another job may hold the port; set --set metrics.port_base=N "
                             "(0: any free port) or --set metrics.enabled=false");
  }
  const prometheus::Labels labels = {{"rank", std::to_string(topology.rank())},
                                     {"stage", std::to_string(topology.stage())},
                                     {"dp_rank", std::to_string(topology.dp_rank())}};
  auto gauge = [&](const char* name, const char* help) -> prometheus::Family<prometheus::Gauge>& {
    return prometheus::BuildGauge().Name(name).Help(help).Labels(labels).Register(*registry_);
  };
  auto counter = [&](const char* name, const char* help) -> prometheus::Family<prometheus::Counter>& {
    return prometheus::BuildCounter().Name(name).Help(help).Labels(labels).Register(*registry_);
  };
  gauge("vlm_build_info", "Always 1; the build's version and libraries as labels")
      .Add({{"version", VLM_VERSION}, {"torch", TORCH_VERSION}}).Set(1);
  gauge("vlm_run_info", "Always 1; the run's identity and layout as labels")
      .Add({{"run", config.run_name()},
            {"run_dir", run_dir},
            {"world_size", std::to_string(topology.world_size())},
            {"pipeline_stages", std::to_string(topology.pipeline_stages)},
            {"data_parallel", std::to_string(topology.data_parallel)}})
      .Set(1);
  gauge("vlm_restarts", "Restarts of this job so far (from the launcher or Slurm)").Add({}).Set(restarts_from_environment());
  gauge("vlm_peak_flops_per_second", "Peak FLOP/s of one rank's device (metrics.peak_flops_per_second; 0: unknown)")
      .Add({}).Set(config.peak_flops_per_second());
  auto& loss = gauge("vlm_train_loss", "Training loss of the last step, mean over DP ranks");
  loss_total_ = &loss.Add({{"kind", "total"}});
  loss_contrastive_ = &loss.Add({{"kind", "contrastive"}});
  loss_caption_ = &loss.Add({{"kind", "caption"}});
  learning_rate_ = &gauge("vlm_learning_rate", "Learning rate of the last step").Add({});
  grad_norm_ = &gauge("vlm_grad_norm", "Global gradient L2 norm before clipping").Add({});
  step_ = &gauge("vlm_train_step", "Optimizer steps completed").Add({});
  samples_ = &counter("vlm_train_samples_total", "Samples this rank trained on (its DP replica's share)").Add({});
  model_flops_ = &counter("vlm_model_flops_total", "Model FLOPs this rank computed (model/flops.h), for MFU").Add({});
  step_seconds_ = &prometheus::BuildHistogram().Name("vlm_step_seconds").Help("Wall time of one optimizer step").Labels(labels).Register(*registry_)
                       .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120});
  busy_seconds_ = &counter("vlm_busy_seconds_total", "Forward and backward compute on this rank, without waiting (straggler detection)").Add({});
  data_wait_seconds_ = &counter("vlm_data_wait_seconds_total", "Time the step waited for its batches").Add({});
  damaged_samples_ = &counter("vlm_data_damaged_samples_total", "Damaged samples found and skipped (docs/data.md)").Add({});
  optimizer_seconds_ = &counter("vlm_optimizer_seconds_total", "Agreeing on the norm and losses, clipping, the AdamW update").Add({});
  last_step_timestamp_ = &gauge("vlm_last_step_timestamp_seconds", "Unix time at which the last step finished").Add({});
  resident_bytes_ = &gauge("process_resident_memory_bytes", "Resident memory of this rank's process").Add({});
  comm_seconds_ = &counter("vlm_comm_seconds_total", "Time spent in communication operations, by operation");
  comm_bytes_ = &counter("vlm_comm_bytes_total", "Payload bytes this rank contributed to communication operations");
  comm_exposed_seconds_ = &counter("vlm_comm_exposed_seconds_total", "Gradient communication not hidden behind backward (the wait after it)").Add({});
  bubble_ = &gauge("vlm_pipeline_bubble_ratio", "Share of the last step this pipeline stage spent idle (0 without a pipeline)").Add({});
  buckets_ = &gauge("vlm_grad_buckets", "Gradient buckets of the DP reducer").Add({});
  bucket_bytes_ = &gauge("vlm_grad_bucket_bytes", "Size of each gradient bucket, in launch order");
  checkpoint_stall_seconds_ = &counter("vlm_checkpoint_stall_seconds_total", "Training time lost to checkpoints: synchronous saves, asynchronous save calls, optimizer steps waiting for their copy").Add({});
  checkpoints_ = &counter("vlm_checkpoints_total", "Checkpoint saves started").Add({});
  checkpoint_step_ = &gauge("vlm_checkpoint_step", "Step of the last checkpoint save started").Add({});
  checkpoint_timestamp_ = &gauge("vlm_checkpoint_timestamp_seconds", "Unix time of the last checkpoint save started (0: none yet)").Add({});
  skipped_non_finite_ = &counter("vlm_skipped_steps_total", "Steps skipped without an update, by reason").Add({{"reason", "non_finite"}});
  validation_ = &gauge("vlm_validation", "Held-out metrics of the last validation (trainer/validation.h), by metric");
  validation_step_ = &gauge("vlm_validation_step", "Steps done at the last validation (0: none yet)").Add({});
  non_finite_losses_ = &counter("vlm_non_finite_losses_total", "Steps whose loss was NaN or infinite").Add({});
  resident_bytes_->Set(resident_bytes());
}

void TrainMetrics::record_step(const StepStats& s) {
  if (s.has_values) {  // on a GPU: logged steps only (Note [A step's outcome, a step late])
    loss_total_->Set(s.loss);
    loss_contrastive_->Set(s.contrastive_loss);
    loss_caption_->Set(s.caption_loss);
    grad_norm_->Set(s.grad_norm);
    if (!std::isfinite(s.loss)) non_finite_losses_->Increment();
  }
  learning_rate_->Set(s.learning_rate);
  step_->Set(static_cast<double>(s.step + 1));
  samples_->Increment(static_cast<double>(s.rank_samples));
  model_flops_->Increment(s.model_flops);
  step_seconds_->Observe(s.seconds);
  busy_seconds_->Increment(s.busy_seconds);
  data_wait_seconds_->Increment(s.data_seconds);
  damaged_samples_->Increment(static_cast<double>(s.damaged_samples) - damaged_samples_->Value());
  optimizer_seconds_->Increment(s.optimizer_seconds);
  comm_exposed_seconds_->Increment(s.reduction.exposed_seconds);
  checkpoint_stall_seconds_->Increment(s.checkpoint_wait_seconds);
  skipped_non_finite_->Increment(static_cast<double>(s.skipped_steps) - skipped_non_finite_->Value());
  bubble_->Set(pipeline_ && s.seconds > 0 ? 1.0 - s.busy_seconds / s.seconds : 0.0);
  last_step_timestamp_->Set(unix_time());
  resident_bytes_->Set(resident_bytes());
}

void TrainMetrics::record_communication(const std::map<std::string, OperationTotals>& totals) {
  for (const auto& [op, total] : totals) {
    OperationTotals& seen = reported_[op];
    comm_seconds_->Add({{"op", op}}).Increment(total.seconds - seen.seconds);
    comm_bytes_->Add({{"op", op}}).Increment(static_cast<double>(total.bytes - seen.bytes));
    seen = total;
  }
}

void TrainMetrics::record_checkpoint(int64_t step, double stall_seconds) {
  checkpoints_->Increment();
  checkpoint_step_->Set(static_cast<double>(step));
  checkpoint_timestamp_->Set(unix_time());
  checkpoint_stall_seconds_->Increment(stall_seconds);
}

void TrainMetrics::record_validation(const ValidationResult& r) {
  validation_step_->Set(static_cast<double>(r.step));
  validation_->Add({{"metric", "contrastive_loss"}}).Set(r.contrastive_loss);
  validation_->Add({{"metric", "image_to_text_r1"}}).Set(r.image_to_text_r1);
  validation_->Add({{"metric", "text_to_image_r1"}}).Set(r.text_to_image_r1);
  if (r.zero_shot_samples > 0) validation_->Add({{"metric", "zero_shot_accuracy"}}).Set(r.zero_shot_accuracy);
}

void TrainMetrics::record_buckets(const std::vector<int64_t>& bucket_bytes) {
  buckets_->Set(static_cast<double>(bucket_bytes.size()));
  for (size_t i = 0; i < bucket_bytes.size(); ++i) {
    bucket_bytes_->Add({{"bucket", std::to_string(i)}}).Set(static_cast<double>(bucket_bytes[i]));
  }
}

}  // namespace vlm
