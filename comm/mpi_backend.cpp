#include "comm/mpi_backend.h"

#include <glog/logging.h>

#include <climits>
#include <sstream>

#include "comm/flight_recorder.h"
#include "comm/mpi_check.h"
#include "comm/peer_monitor.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

// Note [Spin then park]: handing an operation to the communication thread and
// its completion back through condition variables costs ~10 us each way,
// which dominates messages of a few hundred KiB. Both sides first poll for a
// short, bounded time (yielding the core), then block.
constexpr auto kSpinBeforeParking = std::chrono::microseconds(100);

template <typename Ready>
bool spin_until(Ready ready) {
  const auto until = Clock::now() + kSpinBeforeParking;
  while (Clock::now() < until) {
    if (ready()) return true;
    std::this_thread::yield();
  }
  return ready();
}

// The one checked map from tensor dtypes to MPI datatypes.
MPI_Datatype mpi_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return MPI_FLOAT;
    case torch::kDouble: return MPI_DOUBLE;
    case torch::kInt: return MPI_INT32_T;
    case torch::kLong: return MPI_INT64_T;
    case torch::kByte: return MPI_UINT8_T;
    default:
      throw CommError(std::string("Backend mpi does not support dtype ") + c10::toString(type) +
                      "; use float32, float64, int32, int64 or uint8");
  }
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

void check_tensor(const torch::Tensor& t, const char* what) {
  if (!t.device().is_cpu()) {
    throw CommError(std::string("Backend mpi does not support ") + c10::DeviceTypeName(t.device().type()) +
                    " tensors (" + what + "); use comm.backend: nccl or auto for GPU tensors");
  }
  if (!t.is_contiguous()) {
    throw CommError(std::string(what) + ": the tensor is not contiguous; pass tensor.contiguous() and copy back");
  }
  mpi_type(t.scalar_type());
}

std::string describe(const char* op, const torch::Tensor& t) {
  std::ostringstream out;
  out << op << "(" << c10::toString(t.scalar_type()) << " x " << t.numel() << ")";
  return out.str();
}

void divide_for_average(torch::Tensor& t, ReduceOp op, int size) {
  if (op == ReduceOp::kAvg) t.div_(size);
}

// Address of element `offset` of a contiguous tensor.
void* at(const torch::Tensor& t, int64_t offset) { return static_cast<char*>(t.data_ptr()) + offset * t.element_size(); }

// Calls `piece(offset, count)` over [0, total) in pieces of at most `per_call` elements (Note [Large messages]).
template <typename Piece>
void in_pieces(int64_t total, int64_t per_call, Piece piece) {
  for (int64_t offset = 0; offset < total; offset += per_call) piece(offset, static_cast<int>(std::min(per_call, total - offset)));
}

}  // namespace

// One queued operation; also the Work handed to the caller.
struct MpiBackend::Operation : Work {
  MpiBackend* backend = nullptr;
  std::string what;  // "allreduce(float x 12) on group dp(stage 0), rank 1"
  std::string kind;
  int peer = -1;
  bool sending = false;
  uint64_t flight_id = 0;
  int64_t seq = 0;
  std::string channel;
  Millis timeout{0};
  Clock::time_point deadline;
  std::function<void()> run;
  std::function<bool()> poll;  // for point-to-point: true once the requests completed
  std::mutex mutex;
  std::condition_variable finished;
  std::atomic<bool> done{false};
  Clock::time_point started;
  double ran_seconds = 0;
  int64_t bytes = 0;
  std::exception_ptr error;

  void start() {
    started = Clock::now();
    FlightRecorder::instance().set_state(flight_id, OpState::kStarted);
  }

  void complete(std::exception_ptr failure) {
    std::lock_guard<std::mutex> lock(mutex);
    ran_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    FlightRecorder::instance().set_state(flight_id, failure ? OpState::kFailed : OpState::kCompleted);
    if (!failure) backend->record(kind, ran_seconds, bytes);
    done = true;
    error = std::move(failure);
    finished.notify_all();
  }

  [[noreturn]] void hang() const {
    StuckOperation stuck = backend->stuck_operation(kind, what, seq, channel, peer, sending);
    stuck.waited_seconds = timeout.count() / 1000.0;
    end_job_on_hang(stuck);
  }

  void wait() override {
    spin_until([this] { return done.load(); });
    std::unique_lock<std::mutex> lock(mutex);
    if (!finished.wait_until(lock, deadline, [this] { return done.load(); })) {
      lock.unlock();
      hang();
    }
    if (error) std::rethrow_exception(error);
  }

  bool is_completed() override { return done.load(); }

  double seconds() override {
    std::lock_guard<std::mutex> lock(mutex);
    return done.load() ? ran_seconds : 0.0;
  }
};

MpiBackend::MpiBackend(MPI_Comm group, std::string group_name, Millis init_timeout)
    : Backend(group, std::move(group_name)) {
  run_with_deadline(channel(), "comm_dup", describe_on_group("MPI_Comm_dup"), members(), init_timeout,
                    [&] { VLM_MPI_CHECK(MPI_Comm_dup(group, &comm_)); });
  VLM_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  thread_ = std::thread([this] { communication_loop(); });
}

MpiBackend::~MpiBackend() {
  std::shared_ptr<Operation> running;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    stopping_ = true;
    queued_.notify_all();
    // An error may unwind past an operation still inside MPI: give it its own
    // deadline, then end the job from here rather than join a thread that never returns.
    while (!exited_) {
      const auto until = running_ ? running_->deadline : Clock::now() + std::chrono::seconds(1);
      if (!exited_signal_.wait_until(lock, until, [this] { return exited_; }) && running_ &&
          Clock::now() >= running_->deadline) {
        running = running_;
        break;
      }
    }
  }
  if (running) {
    LOG(ERROR) << "group " << group_name() << " is shutting down while " << running->what
               << " is still inside MPI";
    running->hang();
  }
  thread_.join();
  if (MPI_Comm_free(&comm_) != MPI_SUCCESS) LOG(ERROR) << "MPI_Comm_free failed for group " << group_name();
}

WorkPtr MpiBackend::enqueue(const char* kind, int64_t bytes, std::string what, Millis timeout, int peer, bool sending,
                            std::function<void()> run, std::function<bool()> poll) {
  auto op = std::make_shared<Operation>();
  op->backend = this;
  op->what = describe_on_group(what);
  op->kind = kind;
  op->peer = peer;
  op->sending = sending;
  op->channel = channel(peer, sending);
  std::tie(op->flight_id, op->seq) = FlightRecorder::instance().record(op->channel, kind, what, bytes);
  op->timeout = timeout;
  op->deadline = Clock::now() + timeout;
  op->run = std::move(run);
  op->poll = std::move(poll);
  op->bytes = bytes;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(op);
    queue_size_.store(queue_.size());
  }
  queued_.notify_one();
  return op;
}

void MpiBackend::communication_loop() {
  std::vector<std::shared_ptr<Operation>> in_flight;  // point-to-point requests started
  while (true) {
    std::shared_ptr<Operation> op;
    if (in_flight.empty()) spin_until([this] { return queue_size_.load() > 0; });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (in_flight.empty()) {
        queued_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      } else {
        // Requests in flight progress only inside MPI calls: poll them often.
        queued_.wait_for(lock, std::chrono::microseconds(50), [this] { return stopping_ || !queue_.empty(); });
      }
      if (stopping_) {
        // Shutting down (possibly while an error unwinds): never start new work.
        for (auto& queued : queue_) {
          queued->complete(std::make_exception_ptr(CommError(queued->what + ": the backend shut down before it ran")));
        }
        queue_.clear();
        queue_size_.store(0);
        // Point-to-point still in flight (only when an error unwinds past
        // unwaited sends): MPI may still touch their buffers, so they stay
        // alive for the rest of the process; their waiters get the error.
        for (auto& op : in_flight) {
          op->complete(std::make_exception_ptr(CommError(op->what + ": the backend shut down before it completed")));
          new std::shared_ptr<Operation>(op);
        }
        exited_ = true;
        exited_signal_.notify_all();
        return;
      }
      if (!queue_.empty()) {
        op = queue_.front();
        queue_.pop_front();
        queue_size_.store(queue_.size());
        running_ = op;
      }
    }
    if (op) {
      try {
        op->start();
        op->run();
        if (op->poll) {
          in_flight.push_back(op);
        } else {
          op->complete(nullptr);
        }
      } catch (...) {
        op->complete(std::current_exception());
      }
      std::lock_guard<std::mutex> lock(mutex_);
      running_.reset();
    }
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      try {
        if ((*it)->poll()) {
          (*it)->complete(nullptr);
          it = in_flight.erase(it);
          continue;
        }
      } catch (...) {
        (*it)->complete(std::current_exception());
        it = in_flight.erase(it);
        continue;
      }
      ++it;
    }
  }
}

int64_t MpiBackend::elements_per_call(const torch::Tensor& t) const {
  return std::max<int64_t>(1, std::min<int64_t>(INT_MAX, max_bytes_per_call_ / t.element_size()));
}

void MpiBackend::check_signature(const std::string& what, int64_t op, const torch::Tensor& tensor, int64_t root) {
  // Max over [signature, -signature] gives every field's max and min at once.
  const int64_t mine[4] = {op, static_cast<int64_t>(tensor.scalar_type()), tensor.numel(), root};
  int64_t both[8];
  for (int i = 0; i < 4; ++i) both[i] = mine[i], both[4 + i] = -mine[i];
  VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, both, 8, MPI_INT64_T, MPI_MAX, comm_));
  bool agree = true;
  for (int i = 0; i < 4; ++i) agree &= both[i] == -both[4 + i];
  if (agree) return;
  std::ostringstream message;
  message << what << " on group " << group_name() << ": ranks issued mismatched collectives. Rank " << rank()
          << " has operation " << op << ", dtype " << c10::toString(tensor.scalar_type()) << ", " << tensor.numel()
          << " elements, root " << root << "; across the group: operation " << -both[4] << ".." << both[0]
          << ", dtype codes " << -both[5] << ".." << both[1] << ", elements " << -both[6] << ".." << both[2]
          << ", root " << -both[7] << ".." << both[3]
          << ". HINT: every rank must issue the same collectives in the same order with the same shapes";
  throw CommError(message.str());
}

// Operation codes of the signature check.
enum : int64_t { kAllreduce = 1, kBroadcast, kAllgather, kReduceScatter, kBarrier };

WorkPtr MpiBackend::allreduce(torch::Tensor tensor, const AllreduceOptions& options) {
  const std::string what = describe("allreduce", tensor);
  check_tensor(tensor, "allreduce");
  if (options.op == ReduceOp::kAvg && !tensor.is_floating_point()) {
    throw CommError("allreduce: ReduceOp::kAvg needs a floating-point tensor");
  }
  if (size() == 1) return completed_work();  // sum, mean and max of one
  return enqueue("allreduce", tensor.nbytes(), what, options.timeout, -1, false, [this, what, tensor, options]() mutable {
    check_signature(what, kAllreduce * 8 + static_cast<int64_t>(options.op), tensor, 0);
    const MPI_Datatype type = mpi_type(tensor.scalar_type());
    in_pieces(tensor.numel(), elements_per_call(tensor), [&](int64_t offset, int count) {
      VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, at(tensor, offset), count, type, mpi_op(options.op), comm_));
    });
    divide_for_average(tensor, options.op, size());
  });
}

WorkPtr MpiBackend::broadcast(torch::Tensor tensor, const BroadcastOptions& options) {
  const std::string what = describe("broadcast", tensor);
  check_tensor(tensor, "broadcast");
  if (options.root < 0 || options.root >= size()) throw CommError(what + ": root " + std::to_string(options.root) + " is not a rank of the group");
  if (size() == 1) return completed_work();
  return enqueue("broadcast", tensor.nbytes(), what, options.timeout, -1, false, [this, what, tensor, options]() mutable {
    check_signature(what, kBroadcast, tensor, options.root);
    const MPI_Datatype type = mpi_type(tensor.scalar_type());
    in_pieces(tensor.numel(), elements_per_call(tensor), [&](int64_t offset, int count) {
      VLM_MPI_CHECK(MPI_Bcast(at(tensor, offset), count, type, options.root, comm_));
    });
  });
}

WorkPtr MpiBackend::allgather(torch::Tensor input, torch::Tensor output, const CollectiveOptions& options) {
  const std::string what = describe("allgather", input);
  check_tensor(input, "allgather input");
  check_tensor(output, "allgather output");
  check_group_multiple(what, output, "output", input, "input");
  if (size() == 1) {
    output.copy_(input.view_as(output));
    return completed_work();
  }
  // In place when the input is this rank's slice of the output (ZeRO's
  // parameter gather), as NCCL allows: MPI forbids overlapping buffers.
  const bool in_place = input.data_ptr() == static_cast<char*>(output.data_ptr()) + rank() * input.nbytes();
  return enqueue("allgather", input.nbytes(), what, options.timeout, -1, false, [this, what, input, output, in_place]() mutable {
    check_signature(what, kAllgather, input, 0);
    const MPI_Datatype type = mpi_type(input.scalar_type());
    const int64_t n = input.numel(), per_call = elements_per_call(input);
    if (n <= per_call) {
      VLM_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : input.data_ptr(), static_cast<int>(n), type,
                                  output.data_ptr(), static_cast<int>(n), type, comm_));
      return;
    }
    // In pieces: gather piece p of every rank, then put each where its rank's slice belongs.
    torch::Tensor gathered = torch::empty({size() * per_call}, input.options());
    const torch::Tensor flat_out = output.view({-1});
    in_pieces(n, per_call, [&](int64_t offset, int count) {
      VLM_MPI_CHECK(MPI_Allgather(at(input, offset), count, type, gathered.data_ptr(), count, type, comm_));
      for (int r = 0; r < size(); ++r) flat_out.narrow(0, r * n + offset, count).copy_(gathered.narrow(0, r * count, count));
    });
  });
}

WorkPtr MpiBackend::reduce_scatter(torch::Tensor input, torch::Tensor output, const AllreduceOptions& options) {
  const std::string what = describe("reduce_scatter", output);
  check_tensor(input, "reduce_scatter input");
  check_tensor(output, "reduce_scatter output");
  check_group_multiple(what, input, "input", output, "output");
  if (options.op == ReduceOp::kAvg && !output.is_floating_point()) {
    throw CommError("reduce_scatter: ReduceOp::kAvg needs a floating-point tensor");
  }
  if (size() == 1) {
    output.copy_(input.view_as(output));
    return completed_work();
  }
  return enqueue("reduce_scatter", input.nbytes(), what, options.timeout, -1, false,
                 [this, what, input, output, options]() mutable {
    check_signature(what, kReduceScatter * 8 + static_cast<int64_t>(options.op), output, 0);
    const MPI_Datatype type = mpi_type(output.scalar_type());
    const int64_t n = output.numel(), per_call = elements_per_call(output);
    if (n <= per_call) {
      VLM_MPI_CHECK(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), static_cast<int>(n), type,
                                             mpi_op(options.op), comm_));
    } else {
      // In pieces: piece p of every rank's slice, side by side, reduce-scattered into piece p of the output.
      torch::Tensor packed = torch::empty({size() * per_call}, input.options());
      const torch::Tensor flat_in = input.view({-1});
      in_pieces(n, per_call, [&](int64_t offset, int count) {
        for (int r = 0; r < size(); ++r) packed.narrow(0, r * count, count).copy_(flat_in.narrow(0, r * n + offset, count));
        VLM_MPI_CHECK(MPI_Reduce_scatter_block(packed.data_ptr(), at(output, offset), count, type, mpi_op(options.op), comm_));
      });
    }
    divide_for_average(output, options.op, size());
  });
}

WorkPtr MpiBackend::barrier(const CollectiveOptions& options) {
  if (size() == 1) return completed_work();
  return enqueue("barrier", 0, "barrier", options.timeout, -1, false, [this] {
    check_signature("barrier", kBarrier, torch::Tensor(torch::empty({0})), 0);
    VLM_MPI_CHECK(MPI_Barrier(comm_));
  });
}

// Point-to-point starts nonblocking requests on the communication thread and
// completes when they do, so a send and a receive queued back to back cannot
// deadlock each other. Pieces of one message share a tag and arrive in order.
WorkPtr MpiBackend::point_to_point(bool sending, torch::Tensor tensor, int peer, const PointToPointOptions& options) {
  const char* kind = sending ? "send" : "recv";
  check_tensor(tensor, kind);
  if (peer < 0 || peer >= size() || peer == rank()) {
    throw CommError(describe_on_group(kind) + ": peer " + std::to_string(peer) + " is not another rank of the group");
  }
  auto requests = std::make_shared<std::vector<MPI_Request>>();
  auto start = [this, sending, tensor, peer, options, requests] {
    const MPI_Datatype type = mpi_type(tensor.scalar_type());
    in_pieces(tensor.numel(), elements_per_call(tensor), [&](int64_t offset, int count) {
      MPI_Request& request = requests->emplace_back(MPI_REQUEST_NULL);
      if (sending) {
        VLM_MPI_CHECK(MPI_Isend(at(tensor, offset), count, type, peer, options.tag, comm_, &request));
      } else {
        VLM_MPI_CHECK(MPI_Irecv(at(tensor, offset), count, type, peer, options.tag, comm_, &request));
      }
    });
  };
  auto done = [requests] {
    int finished = 0;
    VLM_MPI_CHECK(MPI_Testall(static_cast<int>(requests->size()), requests->data(), &finished, MPI_STATUSES_IGNORE));
    return finished != 0;
  };
  return enqueue(kind, tensor.nbytes(),
                 describe(kind, tensor) + (sending ? " to rank " : " from rank ") + std::to_string(peer),
                 options.timeout, peer, sending, start, done);
}

WorkPtr MpiBackend::send(torch::Tensor tensor, int destination, const PointToPointOptions& options) {
  return point_to_point(true, std::move(tensor), destination, options);
}

WorkPtr MpiBackend::recv(torch::Tensor tensor, int source, const PointToPointOptions& options) {
  return point_to_point(false, std::move(tensor), source, options);
}

}  // namespace vlm
