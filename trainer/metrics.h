#pragma once
// The per-rank Prometheus endpoint (served on metrics.port_base + local rank).
// Every series carries the labels rank, stage and dp_rank; never `job`, which
// is the scrape job's own label (the run's identity is in vlm_run_info and the
// launcher's target labels). The step number is a value, never a label.
// Throughputs are counters for rate(); each rank counts its own work, so sums
// over ranks are right (docs/operations.md lists every series).

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/backend.h"
#include "comm/topology.h"
#include "trainer/metrics_server.h"
#include "proto/config.pb.h"

namespace vlm {

struct StepStats;
struct ValidationResult;

// The job's restart count, stated by whoever restarts it (a restarted process
// cannot count itself): VLM_RESTART_COUNT (vlm-launch), else Slurm's
// SLURM_RESTART_COUNT (requeues), else 0.
int restarts_from_environment();

class TrainMetrics {
 public:
  TrainMetrics(const MetricsConfig& config, const Topology& topology, const std::string& run_dir);

  void record_step(const StepStats& stats);
  // Cumulative per-operation totals of the DP backend (Backend::totals()).
  void record_communication(const std::map<std::string, OperationTotals>& totals);
  void record_buckets(const std::vector<int64_t>& bucket_bytes);
  // A checkpoint save started (asynchronous) or done (synchronous), and how
  // long the training loop waited for it.
  void record_checkpoint(int64_t step, double stall_seconds);
  void record_validation(const ValidationResult& result);

  // "host:port" a scraper can use (MetricsServer::scrape_address).
  std::string scrape_address() const { return server_->scrape_address(); }
  int port() const { return server_->port(); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsServer> server_;  // Note [Own metrics server]
  bool pipeline_;
  prometheus::Gauge* loss_total_;
  prometheus::Gauge* loss_contrastive_;
  prometheus::Gauge* loss_caption_;
  prometheus::Gauge* learning_rate_;
  prometheus::Gauge* grad_norm_;
  prometheus::Gauge* step_;
  prometheus::Counter* samples_;
  prometheus::Counter* model_flops_;
  prometheus::Histogram* step_seconds_;
  prometheus::Counter* busy_seconds_;
  prometheus::Counter* data_wait_seconds_;
  prometheus::Counter* damaged_samples_;
  prometheus::Counter* optimizer_seconds_;
  prometheus::Gauge* last_step_timestamp_;
  prometheus::Gauge* resident_bytes_;
  prometheus::Family<prometheus::Counter>* comm_seconds_;
  prometheus::Family<prometheus::Counter>* comm_bytes_;
  prometheus::Counter* comm_exposed_seconds_;
  prometheus::Gauge* buckets_;
  prometheus::Gauge* bubble_;
  prometheus::Family<prometheus::Gauge>* bucket_bytes_;
  prometheus::Counter* checkpoint_stall_seconds_;
  prometheus::Counter* checkpoints_;
  prometheus::Gauge* checkpoint_step_;
  prometheus::Gauge* checkpoint_timestamp_;
  prometheus::Counter* skipped_non_finite_;
  prometheus::Counter* non_finite_losses_;
  prometheus::Family<prometheus::Gauge>* validation_;
  prometheus::Gauge* validation_step_;
  std::map<std::string, OperationTotals> reported_;  // totals already turned into counter increments
};

}  // namespace vlm
