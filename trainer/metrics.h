#pragma once
// The per-rank Prometheus endpoint (served on metrics.port_base + local rank).
// Every series carries the labels rank, stage, dp_rank and job; the step
// number is a value, never a label.

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "comm/topology.h"
#include "trainer/metrics_server.h"
#include "proto/config.pb.h"

namespace vlm {

struct StepStats;

class TrainMetrics {
 public:
  TrainMetrics(const MetricsConfig& config, const Topology& topology);

  void record_step(const StepStats& stats);

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
};

}  // namespace vlm
