#include "trainer/metrics.h"

#include <chrono>
#include <stdexcept>

#include "trainer/trainer.h"

namespace vlm {

TrainMetrics::TrainMetrics(const MetricsConfig& config, const Topology& topology)
    : registry_(std::make_shared<prometheus::Registry>()) {
  const int port = config.port_base() == 0 ? 0 : config.port_base() + topology.process.local_rank;
  try {
    server_ = std::make_unique<MetricsServer>(config.bind_address(), port, registry_);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(e.what()) + " (metrics.port_base(" + std::to_string(config.port_base()) +
                             ") + local rank(" + std::to_string(topology.process.local_rank) +
                             ")). HINT: another job may hold the port; set --set metrics.port_base=N "
                             "or --set metrics.enabled=false");
  }
  address_ = config.bind_address() + ":" + std::to_string(server_->port());
  const prometheus::Labels labels = {{"rank", std::to_string(topology.rank())},
                                     {"stage", std::to_string(topology.stage())},
                                     {"dp_rank", std::to_string(topology.dp_rank())},
                                     {"job", config.job()}};
  auto& loss = prometheus::BuildGauge().Name("vlm_train_loss").Help("Training loss of the last step, mean over DP ranks").Labels(labels).Register(*registry_);
  loss_total_ = &loss.Add({{"kind", "total"}});
  loss_contrastive_ = &loss.Add({{"kind", "contrastive"}});
  loss_caption_ = &loss.Add({{"kind", "caption"}});
  learning_rate_ = &prometheus::BuildGauge().Name("vlm_learning_rate").Help("Learning rate of the last step").Labels(labels).Register(*registry_).Add({});
  grad_norm_ = &prometheus::BuildGauge().Name("vlm_grad_norm").Help("Global gradient L2 norm before clipping").Labels(labels).Register(*registry_).Add({});
  step_ = &prometheus::BuildGauge().Name("vlm_train_step").Help("Optimizer steps completed").Labels(labels).Register(*registry_).Add({});
  samples_ = &prometheus::BuildCounter().Name("vlm_train_samples_total").Help("Samples trained on, over all DP ranks").Labels(labels).Register(*registry_).Add({});
  step_seconds_ = &prometheus::BuildHistogram().Name("vlm_step_seconds").Help("Wall time of one optimizer step").Labels(labels).Register(*registry_)
                       .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  comm_seconds_ = &prometheus::BuildCounter().Name("vlm_comm_seconds_total").Help("Time spent in communication operations, by operation").Labels(labels).Register(*registry_);
  comm_bytes_ = &prometheus::BuildCounter().Name("vlm_comm_bytes_total").Help("Payload bytes this rank contributed to communication operations").Labels(labels).Register(*registry_);
  comm_exposed_seconds_ = &prometheus::BuildCounter().Name("vlm_comm_exposed_seconds_total").Help("Gradient communication not hidden behind backward (the wait after it)").Labels(labels).Register(*registry_).Add({});
  bubble_ = &prometheus::BuildGauge().Name("vlm_pipeline_bubble_ratio").Help("Share of the last step this pipeline stage spent idle").Labels(labels).Register(*registry_).Add({});
  buckets_ = &prometheus::BuildGauge().Name("vlm_grad_buckets").Help("Gradient buckets of the DP reducer").Labels(labels).Register(*registry_).Add({});
  bucket_bytes_ = &prometheus::BuildGauge().Name("vlm_grad_bucket_bytes").Help("Size of each gradient bucket, in launch order").Labels(labels).Register(*registry_);
  last_step_timestamp_ = &prometheus::BuildGauge().Name("vlm_last_step_timestamp_seconds").Help("Unix time at which the last step finished").Labels(labels).Register(*registry_).Add({});
  checkpoint_stall_seconds_ = &prometheus::BuildCounter().Name("vlm_checkpoint_stall_seconds_total").Help("Training time lost to checkpoints: synchronous saves, asynchronous save calls, optimizer steps waiting for their copy").Labels(labels).Register(*registry_).Add({});
  checkpoints_ = &prometheus::BuildCounter().Name("vlm_checkpoints_total").Help("Checkpoint saves started").Labels(labels).Register(*registry_).Add({});
  checkpoint_step_ = &prometheus::BuildGauge().Name("vlm_checkpoint_step").Help("Step of the last checkpoint save started").Labels(labels).Register(*registry_).Add({});
  skipped_non_finite_ = &prometheus::BuildCounter().Name("vlm_skipped_steps_total").Help("Steps skipped without an update, by reason").Labels(labels).Register(*registry_).Add({{"reason", "non_finite"}});
}

void TrainMetrics::record_step(const StepStats& s) {
  loss_total_->Set(s.loss);
  loss_contrastive_->Set(s.contrastive_loss);
  loss_caption_->Set(s.caption_loss);
  learning_rate_->Set(s.learning_rate);
  grad_norm_->Set(s.grad_norm);
  step_->Set(static_cast<double>(s.step + 1));
  samples_->Increment(static_cast<double>(s.global_samples));
  step_seconds_->Observe(s.seconds);
  comm_exposed_seconds_->Increment(s.reduction.exposed_seconds);
  checkpoint_stall_seconds_->Increment(s.checkpoint_wait_seconds);
  if (s.skipped) skipped_non_finite_->Increment();
  bubble_->Set(s.pipeline_busy_seconds > 0 ? 1.0 - s.pipeline_busy_seconds / s.seconds : 0.0);
  last_step_timestamp_->Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace vlm

namespace vlm {

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
  checkpoint_stall_seconds_->Increment(stall_seconds);
}

void TrainMetrics::record_buckets(const std::vector<int64_t>& bucket_bytes) {
  buckets_->Set(static_cast<double>(bucket_bytes.size()));
  for (size_t i = 0; i < bucket_bytes.size(); ++i) {
    bucket_bytes_->Add({{"bucket", std::to_string(i)}}).Set(static_cast<double>(bucket_bytes[i]));
  }
}

}  // namespace vlm
