#include "comm/mpi_backend.h"

#include <glog/logging.h>

#include <climits>
#include <sstream>

#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"

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
  if (t.numel() > INT_MAX) throw CommError(std::string(what) + ": more than INT_MAX elements in one message");
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

}  // namespace

// One queued operation; also the Work handed to the caller.
struct MpiBackend::Operation : Work {
  std::string what;  // "allreduce(float x 12) on group dp(stage 0), rank 1"
  Millis timeout;
  Clock::time_point deadline;
  std::function<void()> run;
  std::function<bool()> poll;  // for point-to-point: true once the request completed
  std::mutex mutex;
  std::condition_variable finished;
  std::atomic<bool> done{false};
  Clock::time_point started;
  double ran_seconds = 0;
  std::exception_ptr error;
  std::shared_ptr<std::atomic<bool>> timed_out;  // the backend's flag
  std::function<void(double)> on_complete;        // feeds the backend's totals

  void complete(std::exception_ptr failure) {
    std::lock_guard<std::mutex> lock(mutex);
    ran_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    if (!failure) on_complete(ran_seconds);
    done = true;
    error = std::move(failure);
    finished.notify_all();
  }

  void wait() override {
    spin_until([this] { return done.load(); });
    std::unique_lock<std::mutex> lock(mutex);
    if (!finished.wait_until(lock, deadline, [this] { return done.load(); })) {
      timed_out->store(true);
      std::ostringstream message;
      message << what << " timed out after " << timeout.count() / 1000.0
              << " s: another rank of the group has not joined it (dead, stuck, or running a different "
                 "sequence of collectives). HINT: look for an earlier error on another rank; raise "
                 "comm.timeout_seconds if the job is just slow";
      LOG(ERROR) << message.str();  // logged now: the job ends when the backend is destroyed
      throw CommError(message.str());
    }
    if (error) std::rethrow_exception(error);
  }

  bool is_completed() override { return done.load(); }

  double seconds() override {
    std::lock_guard<std::mutex> lock(mutex);
    return done.load() ? ran_seconds : 0.0;
  }
};

MpiBackend::MpiBackend(MPI_Comm group, std::string group_name) : Backend(group, std::move(group_name)) {
  VLM_MPI_CHECK(MPI_Comm_dup(group, &comm_));
  VLM_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  thread_ = std::thread([this] { communication_loop(); });
}

MpiBackend::~MpiBackend() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  queued_.notify_all();
  if (timed_out_->load()) {
    // The communication thread may never return from MPI, and must not outlive
    // this object: a timed-out collective ends the job (its message is logged).
    LOG(ERROR) << "ending the job: a collective on group " << group_name() << " timed out";
    MpiRuntime::abort_job(1);
  }
  thread_.join();
  if (MPI_Comm_free(&comm_) != MPI_SUCCESS) LOG(ERROR) << "MPI_Comm_free failed for group " << group_name();
}

WorkPtr MpiBackend::enqueue(const char* kind, int64_t bytes, std::string what, Millis timeout,
                            std::function<void()> run, std::function<bool()> poll) {
  auto op = std::make_shared<Operation>();
  op->what = describe_on_group(what);
  op->timeout = timeout;
  op->deadline = Clock::now() + timeout;
  op->run = std::move(run);
  op->poll = std::move(poll);
  op->timed_out = timed_out_;
  op->on_complete = [this, kind, bytes](double seconds) { record(kind, seconds, bytes); };
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
        return;  // requests still in flight are left to MPI_Comm_free
      }
      if (!queue_.empty()) {
        op = queue_.front();
        queue_.pop_front();
        queue_size_.store(queue_.size());
      }
    }
    if (op) {
      try {
        op->started = Clock::now();
        op->run();
        if (op->poll) {
          in_flight.push_back(op);
        } else {
          op->complete(nullptr);
        }
      } catch (...) {
        op->complete(std::current_exception());
      }
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
  return enqueue("allreduce", tensor.nbytes(), what, options.timeout, [this, what, tensor, options]() mutable {
    check_signature(what, kAllreduce * 8 + static_cast<int64_t>(options.op), tensor, 0);
    VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()),
                                mpi_type(tensor.scalar_type()), mpi_op(options.op), comm_));
    divide_for_average(tensor, options.op, size());
  });
}

WorkPtr MpiBackend::broadcast(torch::Tensor tensor, const BroadcastOptions& options) {
  const std::string what = describe("broadcast", tensor);
  check_tensor(tensor, "broadcast");
  if (options.root < 0 || options.root >= size()) throw CommError(what + ": root " + std::to_string(options.root) + " is not a rank of the group");
  return enqueue("broadcast", tensor.nbytes(), what, options.timeout, [this, what, tensor, options]() mutable {
    check_signature(what, kBroadcast, tensor, options.root);
    VLM_MPI_CHECK(MPI_Bcast(tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor.scalar_type()),
                            options.root, comm_));
  });
}

WorkPtr MpiBackend::allgather(torch::Tensor input, torch::Tensor output, const CollectiveOptions& options) {
  const std::string what = describe("allgather", input);
  check_tensor(input, "allgather input");
  check_tensor(output, "allgather output");
  check_group_multiple(what, output, "output", input, "input");
  return enqueue("allgather", input.nbytes(), what, options.timeout, [this, what, input, output]() mutable {
    check_signature(what, kAllgather, input, 0);
    const MPI_Datatype type = mpi_type(input.scalar_type());
    VLM_MPI_CHECK(MPI_Allgather(input.data_ptr(), static_cast<int>(input.numel()), type, output.data_ptr(),
                                static_cast<int>(input.numel()), type, comm_));
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
  return enqueue("reduce_scatter", input.nbytes(), what, options.timeout, [this, what, input, output, options]() mutable {
    check_signature(what, kReduceScatter * 8 + static_cast<int64_t>(options.op), output, 0);
    VLM_MPI_CHECK(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), static_cast<int>(output.numel()),
                                           mpi_type(output.scalar_type()), mpi_op(options.op), comm_));
    divide_for_average(output, options.op, size());
  });
}

WorkPtr MpiBackend::barrier(const CollectiveOptions& options) {
  return enqueue("barrier", 0, "barrier", options.timeout, [this] {
    check_signature("barrier", kBarrier, torch::Tensor(torch::empty({0})), 0);
    VLM_MPI_CHECK(MPI_Barrier(comm_));
  });
}

// Point-to-point starts a nonblocking request on the communication thread and
// completes when it does, so a send and a receive queued back to back cannot
// deadlock each other.
WorkPtr MpiBackend::point_to_point(bool sending, torch::Tensor tensor, int peer, const PointToPointOptions& options) {
  const char* kind = sending ? "send" : "recv";
  check_tensor(tensor, kind);
  auto request = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
  auto start = [this, sending, tensor, peer, options, request] {
    const int count = static_cast<int>(tensor.numel());
    const MPI_Datatype type = mpi_type(tensor.scalar_type());
    if (sending) {
      VLM_MPI_CHECK(MPI_Isend(tensor.data_ptr(), count, type, peer, options.tag, comm_, request.get()));
    } else {
      VLM_MPI_CHECK(MPI_Irecv(tensor.data_ptr(), count, type, peer, options.tag, comm_, request.get()));
    }
  };
  auto done = [request] {
    int finished = 0;
    VLM_MPI_CHECK(MPI_Test(request.get(), &finished, MPI_STATUS_IGNORE));
    return finished != 0;
  };
  return enqueue(kind, tensor.nbytes(),
                 describe(kind, tensor) + (sending ? " to rank " : " from rank ") + std::to_string(peer),
                 options.timeout, start, done);
}

WorkPtr MpiBackend::send(torch::Tensor tensor, int destination, const PointToPointOptions& options) {
  return point_to_point(true, std::move(tensor), destination, options);
}

WorkPtr MpiBackend::recv(torch::Tensor tensor, int source, const PointToPointOptions& options) {
  return point_to_point(false, std::move(tensor), source, options);
}

}  // namespace vlm
