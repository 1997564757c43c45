#pragma once
// Note [Own metrics server]: prometheus-cpp's Exposer runs civetweb, whose
// threads are created with a small fixed stack. With LibTorch, OpenBLAS and
// glog loaded, their static TLS (~100 KiB together) no longer fits in that
// stack and pthread_create fails with EINVAL ("null context when constructing
// CivetServer"). So vlmtrain keeps prometheus-cpp's registry and text format
// but serves GET /metrics from this small single-threaded HTTP/1.0 server.

#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

namespace vlm {

class MetricsServer {
 public:
  // Binds `address`:`port` (port 0 picks a free one) and serves on a thread.
  // Throws std::runtime_error naming the address when it cannot bind.
  MetricsServer(const std::string& address, int port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  void serve();
  void answer(int client);

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace vlm
