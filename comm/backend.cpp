#include "comm/backend.h"

#include <algorithm>

#include "comm/cuda_device.h"
#include "comm/mpi_backend.h"
#include "comm/mpi_check.h"
#ifdef VLM_WITH_NCCL
#include "comm/nccl_backend.h"
#endif

namespace vlm {
namespace {

struct CompletedWork : Work {
  void wait() override {}
  bool is_completed() override { return true; }
  double seconds() override { return 0; }
};

// Done when every part is.
struct AllOfWork : Work {
  std::vector<WorkPtr> parts;
  void wait() override {
    for (auto& w : parts) w->wait();
  }
  bool is_completed() override {
    for (auto& w : parts) {
      if (!w->is_completed()) return false;
    }
    return true;
  }
  double seconds() override {
    double longest = 0;
    for (auto& w : parts) longest = std::max(longest, w->seconds());
    return longest;
  }
};

}  // namespace

WorkPtr completed_work() { return std::make_shared<CompletedWork>(); }

// Point-to-point that already starts nonblocking (MPI) needs no grouping.
WorkPtr Backend::send_recv_batch(const std::vector<PointToPointOp>& ops, Millis timeout) {
  auto all = std::make_shared<AllOfWork>();
  for (const auto& op : ops) {
    const PointToPointOptions options{op.tag, timeout};
    all->parts.push_back(op.sending ? send(op.tensor, op.peer, options) : recv(op.tensor, op.peer, options));
  }
  return all;
}

Backend::Backend(MPI_Comm group, std::string group_name) : group_name_(std::move(group_name)) {
  VLM_MPI_CHECK(MPI_Comm_rank(group, &rank_));
  VLM_MPI_CHECK(MPI_Comm_size(group, &size_));
  MPI_Group local, world;
  VLM_MPI_CHECK(MPI_Comm_group(group, &local));
  VLM_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
  std::vector<int> ranks(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) ranks[r] = r;
  members_.resize(static_cast<size_t>(size_));
  VLM_MPI_CHECK(MPI_Group_translate_ranks(local, size_, ranks.data(), world, members_.data()));
  MPI_Group_free(&local);
  MPI_Group_free(&world);
}

std::string Backend::describe_on_group(const std::string& what) const {
  return what + " on group " + group_name_ + ", rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
         " (" + process_label() + ")";
}

std::string Backend::channel(int peer, bool sending) const {
  if (peer < 0) return group_name_;
  return group_name_ + (sending ? "/send:" : "/recv:") + std::to_string(peer);
}

StuckOperation Backend::stuck_operation(const std::string& op, const std::string& description, int64_t seq,
                                        const std::string& channel, int peer, bool sending) const {
  StuckOperation stuck;
  stuck.description = description;
  stuck.op = op;
  stuck.group = group_name_;
  stuck.seq = seq;
  stuck.channel = channel;
  if (peer < 0) {
    stuck.participants = members_;
    stuck.participant_channel = channel;
  } else {
    // The peer arrived once it issued the matching operation on its own channel towards this rank.
    stuck.participants = {members_.at(static_cast<size_t>(peer))};
    stuck.participant_channel = group_name_ + (sending ? "/recv:" : "/send:") + std::to_string(rank_);
  }
  return stuck;
}

void Backend::check_group_multiple(const std::string& what, const torch::Tensor& whole, const char* whole_name,
                                   const torch::Tensor& part, const char* part_name) const {
  if (whole.numel() != part.numel() * size_ || whole.scalar_type() != part.scalar_type()) {
    throw CommError(what + ": the " + whole_name + " must hold group size(" + std::to_string(size_) + ") x " +
                    std::to_string(part.numel()) + " elements of the " + part_name + "'s dtype, not " +
                    std::to_string(whole.numel()) + " " + c10::toString(whole.scalar_type()));
  }
}

std::unique_ptr<Backend> make_backend(const BackendOptions& options, MPI_Comm group, const std::string& group_name) {
  const bool nccl = options.kind == BackendKind::kNccl || (options.kind == BackendKind::kAuto && options.device.is_cuda());
  if (!nccl) return std::make_unique<MpiBackend>(group, group_name, options.init_timeout);
  std::string why;
  if (cuda_device_count(&why) == 0) {
    throw CommError("comm.backend: NCCL needs a CUDA GPU, but none is usable on " + process_label() + " (" + why +
                    "). HINT: use comm.backend: MPI (or AUTO, which picks MPI for CPU tensors)");
  }
#ifdef VLM_WITH_NCCL
  return std::make_unique<NcclBackend>(group, group_name, cuda_device_index(options.device), options.init_timeout,
                                       options.blocking_wait);
#else
  throw CommError("comm.backend: NCCL was not built in (VLM_WITH_NCCL=OFF); rebuild with the CUDA toolkit");
#endif
}

}  // namespace vlm
