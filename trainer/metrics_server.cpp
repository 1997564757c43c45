#include "trainer/metrics_server.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "comm/text.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kConnectionLifetime = std::chrono::seconds(10);  // Prometheus's default scrape timeout
constexpr auto kSendLimit = std::chrono::seconds(2);            // a scraper that stops reading
constexpr size_t kMaxConnections = 64;                          // more are closed at once
constexpr size_t kMaxRequestBytes = 8192;

struct Connection {
  int fd;
  std::string request;
  Clock::time_point deadline;
};

// Blocking send bounded by kSendLimit in all.
void send_all(int fd, const std::string& data) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  timeval step{0, 200 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &step, sizeof step);
  const auto until = Clock::now() + kSendLimit;
  size_t sent = 0;
  while (sent < data.size() && Clock::now() < until) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return;  // the scraper went away; nothing to do
    }
  }
}

std::string response(const char* status, const char* type, const std::string& body, bool head) {
  return std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         (head ? std::string() : body);
}

}  // namespace

MetricsServer::MetricsServer(const std::string& address, int port, std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)), address_(address) {
  const std::string where = (address.find(':') != std::string::npos ? "[" + address + "]" : address) + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    throw std::runtime_error("metrics.bind_address '" + address + "' does not resolve (" + ::gai_strerror(rc) +
                             "); use an address of this host such as 0.0.0.0, ::, 127.0.0.1 or its host name");
  }
  std::string reason;
  for (addrinfo* a = found; a != nullptr && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 64) == 0) {
      listen_fd_ = fd;
      ipv6_ = a->ai_family == AF_INET6;
      wildcard_ = ipv6_ ? IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr)
                        : reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr.s_addr == htonl(INADDR_ANY);
    } else {
      reason = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (listen_fd_ < 0) throw std::runtime_error("cannot serve metrics on " + where + ": " + reason);
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &length);
  port_ = ntohs(ipv6_ ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                      : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  CHECK_EQ(::pipe2(stop_pipe_, O_CLOEXEC), 0);
  thread_ = std::thread([this] { serve(); });
}

MetricsServer::~MetricsServer() {
  const char stop = 1;
  if (::write(stop_pipe_[1], &stop, 1) != 1) LOG(ERROR) << "cannot stop the metrics server thread";
  thread_.join();
  ::close(listen_fd_);
  ::close(stop_pipe_[0]);
  ::close(stop_pipe_[1]);
}

std::string MetricsServer::scrape_address() const {
  const std::string host = wildcard_ ? host_name() : address_;
  const bool literal_v6 = host.find(':') != std::string::npos;
  return (literal_v6 ? "[" + host + "]" : host) + ":" + std::to_string(port_);
}

void MetricsServer::serve() {
  std::vector<Connection> open;
  std::vector<pollfd> fds;
  while (true) {
    fds.assign({{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}});
    for (const Connection& c : open) fds.push_back({c.fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) {
      LOG(ERROR) << "metrics server poll failed: " << std::strerror(errno);
      break;
    }
    if (fds[1].revents != 0) break;
    const auto now = Clock::now();
    // Read what arrived; answer complete requests; drop finished, broken and expired connections.
    for (size_t i = 0; i < open.size(); ++i) {
      Connection& c = open[i];
      bool done = now > c.deadline;
      if (!done && fds[i + 2].revents != 0) {
        char buffer[2048];
        const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
        if (n > 0) c.request.append(buffer, static_cast<size_t>(n));
        const bool complete = c.request.find("\r\n\r\n") != std::string::npos || c.request.size() > kMaxRequestBytes;
        if (complete) send_all(c.fd, answer(c.request));
        done = complete || n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
      }
      if (done) {
        ::close(c.fd);
        c.fd = -1;
      }
    }
    open.erase(std::remove_if(open.begin(), open.end(), [](const Connection& c) { return c.fd < 0; }), open.end());
    if ((fds[0].revents & POLLIN) != 0) {
      for (int fd; (fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0;) {
        if (open.size() >= kMaxConnections) {
          ::close(fd);
        } else {
          open.push_back({fd, {}, now + kConnectionLifetime});
        }
      }
    }
  }
  for (const Connection& c : open) ::close(c.fd);
}

std::string MetricsServer::answer(const std::string& request) const {
  const size_t method_end = request.find(' ');
  const std::string method = request.substr(0, method_end);
  const size_t path_end = request.find_first_of(" ?", method_end + 1);
  const std::string path = method_end == std::string::npos ? "" : request.substr(method_end + 1, path_end - method_end - 1);
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    return response("405 Method Not Allowed", "text/plain", "vlmtrain serves GET and HEAD /metrics\n", false);
  }
  if (path != "/metrics") return response("404 Not Found", "text/plain", "vlmtrain serves /metrics\n", head);
  const std::string body = prometheus::TextSerializer().Serialize(registry_->Collect());
  return response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body, head);
}

}  // namespace vlm
