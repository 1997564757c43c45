#pragma once
// Note [Own metrics server]: prometheus-cpp's Exposer runs civetweb, whose
// threads are created with a small fixed stack. With LibTorch, OpenBLAS and
// glog loaded, their static TLS (~100 KiB together) no longer fits in that
// stack and pthread_create fails with EINVAL ("null context when constructing
// CivetServer"). So vlmtrain keeps prometheus-cpp's registry and text format
// but serves GET and HEAD /metrics from this small HTTP server: one thread,
// one poll loop over every open connection, so idle or slow clients never
// delay a scrape, and each connection has a bounded lifetime.

#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <thread>

namespace vlm {

class MetricsServer {
 public:
  // Binds `address` (an IPv4 or IPv6 literal or a host name) and `port` (0
  // picks a free one) and serves on a thread. Throws std::runtime_error naming
  // the address when it cannot resolve or bind it.
  MetricsServer(const std::string& address, int port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  // "host:port" a scraper on another host can use: this host's name when
  // bound to a wildcard address, else the address ("[v6]:port" for IPv6).
  std::string scrape_address() const;

 private:
  void serve();
  std::string answer(const std::string& request) const;

  std::shared_ptr<prometheus::Registry> registry_;
  std::string address_;
  bool wildcard_ = false;
  bool ipv6_ = false;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace vlm
