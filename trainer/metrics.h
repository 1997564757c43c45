#pragma once
// The per-rank Prometheus endpoint (served on metrics.port_base + local rank).
// Every series carries the labels rank, stage, dp_rank and job; the step
// number is a value, never a label.

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

class TrainMetrics {
 public:
  TrainMetrics(const MetricsConfig& config, const Topology& topology);

  void record_step(const StepStats& stats);
  // Cumulative per-operation totals of the DP backend (Backend::totals()).
  void record_communication(const std::map<std::string, OperationTotals>& totals);
  void record_buckets(const std::vector<int64_t>& bucket_bytes);
  // A checkpoint save started (asynchronous) or done (synchronous), and how
  // long the training loop waited for it.
  void record_checkpoint(int64_t step, double stall_seconds);

  // "host:port" being served (port_base + local rank).
  const std::string& address() const { return address_; }
  int port() const { return server_->port(); }

 private:
  std::string address_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsServer> server_;  // Note [Own metrics server]
  prometheus::Gauge* loss_total_;
  prometheus::Gauge* loss_contrastive_;
  prometheus::Gauge* loss_caption_;
  prometheus::Gauge* learning_rate_;
  prometheus::Gauge* grad_norm_;
  prometheus::Gauge* step_;
  prometheus::Counter* samples_;
  prometheus::Histogram* step_seconds_;
  prometheus::Gauge* last_step_timestamp_;
  prometheus::Family<prometheus::Counter>* comm_seconds_;
  prometheus::Family<prometheus::Counter>* comm_bytes_;
  prometheus::Counter* comm_exposed_seconds_;
  prometheus::Gauge* buckets_;
  prometheus::Gauge* bubble_;
  prometheus::Family<prometheus::Gauge>* bucket_bytes_;
  prometheus::Counter* checkpoint_stall_seconds_;
  prometheus::Counter* checkpoints_;
  prometheus::Gauge* checkpoint_step_;
  prometheus::Counter* skipped_non_finite_;
  std::map<std::string, OperationTotals> reported_;  // totals already turned into counter increments
};

}  // namespace vlm
