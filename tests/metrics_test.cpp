// The Prometheus endpoint, scraped over a real socket.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "trainer/metrics.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  EXPECT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) reply.append(buffer, n);
  ::close(fd);
  return reply;
}

MetricsConfig any_port() {
  MetricsConfig c;
  c.set_port_base(0);
  c.set_bind_address("127.0.0.1");
  c.set_job("unit");
  return c;
}

TEST(Metrics, EndpointServesLabelledSeries) {
  const Topology topology{ProcessInfo{0, 1, 0, 1}, 1, 1};
  TrainMetrics metrics(any_port(), topology);
  StepStats stats;
  stats.step = 41;
  stats.loss = 2.5;
  stats.contrastive_loss = 1.5;
  stats.caption_loss = 0.5;
  stats.seconds = 0.2;
  stats.global_samples = 64;
  stats.reduction.exposed_seconds = 0.25;
  stats.checkpoint_wait_seconds = 0.125;
  metrics.record_step(stats);
  stats.skipped = true;
  metrics.record_step(stats);
  metrics.record_buckets({1048576, 4096});
  metrics.record_checkpoint(40, 0.5);
  metrics.record_communication({{"allreduce", OperationTotals{1.5, 1000, 3}}});
  metrics.record_communication({{"allreduce", OperationTotals{2.0, 1500, 4}}});  // cumulative: +0.5 s, +500 B

  const std::string reply = http_get(metrics.port(), "/metrics");
  EXPECT_EQ(reply.rfind("HTTP/1.0 200 OK", 0), 0u) << reply;
  const std::string labels = "dp_rank=\"0\",job=\"unit\",rank=\"0\",stage=\"0\",kind=\"total\"";
  EXPECT_NE(reply.find("vlm_train_loss{" + labels + "} 2.5"), std::string::npos) << reply;
  EXPECT_NE(reply.find("vlm_train_samples_total{dp_rank=\"0\",job=\"unit\",rank=\"0\",stage=\"0\"} 128"),
            std::string::npos) << reply;
  EXPECT_NE(reply.find("vlm_step_seconds_count{dp_rank=\"0\",job=\"unit\",rank=\"0\",stage=\"0\"} 2"),
            std::string::npos) << reply;
  EXPECT_NE(reply.find("vlm_train_step{dp_rank=\"0\",job=\"unit\",rank=\"0\",stage=\"0\"} 42"), std::string::npos);
  EXPECT_NE(reply.find("vlm_last_step_timestamp_seconds{"), std::string::npos);
  const std::string rank_labels = "dp_rank=\"0\",job=\"unit\",rank=\"0\",stage=\"0\"";
  EXPECT_NE(reply.find("vlm_comm_seconds_total{" + rank_labels + ",op=\"allreduce\"} 2"), std::string::npos) << reply;
  EXPECT_NE(reply.find("vlm_comm_bytes_total{" + rank_labels + ",op=\"allreduce\"} 1500"), std::string::npos);
  EXPECT_NE(reply.find("vlm_comm_exposed_seconds_total{" + rank_labels + "} 0.5"), std::string::npos);
  EXPECT_NE(reply.find("vlm_grad_buckets{" + rank_labels + "} 2"), std::string::npos);
  EXPECT_NE(reply.find("vlm_grad_bucket_bytes{" + rank_labels + ",bucket=\"0\"} 1048576"), std::string::npos);
  EXPECT_NE(reply.find("vlm_checkpoint_stall_seconds_total{" + rank_labels + "} 0.75"), std::string::npos) << reply;
  EXPECT_NE(reply.find("vlm_checkpoints_total{" + rank_labels + "} 1"), std::string::npos);
  EXPECT_NE(reply.find("vlm_checkpoint_step{" + rank_labels + "} 40"), std::string::npos);
  EXPECT_NE(reply.find("vlm_skipped_steps_total{" + rank_labels + ",reason=\"non_finite\"} 1"), std::string::npos) << reply;
  EXPECT_EQ(http_get(metrics.port(), "/other").rfind("HTTP/1.0 404", 0), 0u);
}

TEST(Metrics, BusyPortIsAClearError) {
  const Topology topology{ProcessInfo{0, 1, 0, 1}, 1, 1};
  TrainMetrics first(any_port(), topology);
  MetricsConfig same = any_port();
  same.set_port_base(first.port());
  try {
    TrainMetrics second(same, topology);
    FAIL() << "bound a busy port";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot serve metrics on 127.0.0.1:" + std::to_string(first.port())),
              std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("metrics.port_base"), std::string::npos);
  }
}

}  // namespace
}  // namespace vlm
