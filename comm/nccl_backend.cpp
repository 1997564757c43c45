#include "comm/nccl_backend.h"

#include <cuda_runtime_api.h>
#include <glog/logging.h>

#include <mutex>
#include <thread>

#include "comm/flight_recorder.h"
#include "comm/mpi_check.h"
#include "comm/peer_monitor.h"

#ifdef VLM_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

// Every NCCL and CUDA call reports file:line, the library's message, host and rank.
#define VLM_NCCL_CHECK(call)                                                                       \
  do {                                                                                             \
    const ncclResult_t vlm_nccl_result_ = (call);                                                  \
    if (vlm_nccl_result_ != ncclSuccess) {                                                         \
      ::vlm::throw_library_error(#call, __FILE__, __LINE__, ncclGetErrorString(vlm_nccl_result_)); \
    }                                                                                              \
  } while (0)

#define VLM_CUDA_CHECK(call)                                                                       \
  do {                                                                                             \
    const cudaError_t vlm_cuda_result_ = (call);                                                   \
    if (vlm_cuda_result_ != cudaSuccess) {                                                         \
      ::vlm::throw_library_error(#call, __FILE__, __LINE__, cudaGetErrorString(vlm_cuda_result_)); \
    }                                                                                              \
  } while (0)

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kWatchdogPeriod = std::chrono::milliseconds(100);

// The stream LibTorch computes on; the legacy default stream when LibTorch was
// built without CUDA (then no CUDA tensor can reach this backend anyway).
cudaStream_t compute_stream() {
#ifdef VLM_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream().stream();
#else
  return cudaStreamLegacy;
#endif
}

// The one checked map from tensor dtypes to NCCL datatypes.
ncclDataType_t nccl_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    case torch::kByte: return ncclUint8;
    default: throw CommError(std::string("Backend nccl does not support dtype ") + c10::toString(type));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
  }
  return ncclSum;
}

void check_tensor(const torch::Tensor& t, const char* what) {
  if (!t.device().is_cuda()) {
    throw CommError(std::string("Backend nccl needs CUDA tensors (") + what + " got a " +
                    c10::DeviceTypeName(t.device().type()) + " tensor); use comm.backend: MPI or AUTO for CPU tensors");
  }
  if (!t.is_contiguous()) throw CommError(std::string(what) + ": the tensor is not contiguous; pass tensor.contiguous()");
  nccl_type(t.scalar_type());
}

struct NcclWork : Work {
  std::string what;
  StuckOperation stuck;  // what a timeout reports
  std::vector<uint64_t> flight_ids;  // one per channel the operation uses
  Millis timeout{0};
  Clock::time_point deadline;
  cudaEvent_t started = nullptr;  // timing events: seconds() reads the stream's own clock
  cudaEvent_t done = nullptr;
  std::vector<torch::Tensor> tensors;  // kept alive until the stream is past them
  const char* kind = "";
  int64_t bytes = 0;
  ncclComm_t comm = nullptr;
  bool blocking = false;

  ~NcclWork() override {
    if (started != nullptr) cudaEventDestroy(started);
    if (done != nullptr) cudaEventDestroy(done);
  }
  void wait() override {
    if (blocking) return wait_on_host();
    VLM_CUDA_CHECK(cudaStreamWaitEvent(compute_stream(), done, 0));
  }
  bool is_completed() override { return cudaEventQuery(done) == cudaSuccess; }
  double seconds() override {
    float ms = 0;
    return is_completed() && cudaEventElapsedTime(&ms, started, done) == cudaSuccess ? ms / 1000.0 : 0.0;
  }

  // comm.blocking_wait: the host waits, and raises on an error or at the deadline.
  void wait_on_host() {
    while (true) {
      const cudaError_t state = cudaEventQuery(done);
      if (state == cudaSuccess) return;
      if (state != cudaErrorNotReady) VLM_CUDA_CHECK(state);
      ncclResult_t async_error = ncclSuccess;
      ncclCommGetAsyncError(comm, &async_error);
      if (async_error != ncclSuccess && async_error != ncclInProgress) {
        ncclCommAbort(comm);
        throw CommError(what + ": NCCL reported an asynchronous error: " + ncclGetErrorString(async_error));
      }
      if (Clock::now() > deadline) {
        ncclCommAbort(comm);  // frees the GPU from the stuck kernel
        throw CommError(what + " did not complete within " + std::to_string(timeout.count() / 1000.0) +
                        " s (comm.timeout_seconds); the communicator was aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
};

}  // namespace

ncclUniqueId bootstrap_nccl_id(MPI_Comm group) {
  int rank = 0;
  VLM_MPI_CHECK(MPI_Comm_rank(group, &rank));
  ncclUniqueId id{};
  if (rank == 0) VLM_NCCL_CHECK(ncclGetUniqueId(&id));
  VLM_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, group));
  return id;
}

namespace {

// A nonblocking communicator's calls may return ncclInProgress; the next call
// must wait until the communicator says otherwise. Past `deadline` the
// communicator is aborted and the job ends with a report of `stuck`.
void wait_until_ready(ncclComm_t comm, ncclResult_t result, Clock::time_point deadline, const StuckOperation& stuck) {
  while (result == ncclInProgress) {
    if (Clock::now() > deadline) {
      ncclCommAbort(comm);
      end_job_on_hang(stuck);
    }
    std::this_thread::yield();
    ncclCommGetAsyncError(comm, &result);
  }
  VLM_NCCL_CHECK(result);
}

}  // namespace

struct NcclBackend::State {
  int device = 0;
  bool blocking_wait = false;
  std::string group;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t compute_ready = nullptr;
  int* barrier_word = nullptr;  // device memory for barrier()
  std::mutex mutex;
  std::vector<std::shared_ptr<NcclWork>> in_flight;
  bool stopping = false;
  std::thread watchdog;

  std::function<void(const NcclWork&)> on_complete;  // feeds the backend's totals

  void watch() {
    cudaSetDevice(device);  // or the first CUDA call makes a context on GPU 0
    while (true) {
      std::this_thread::sleep_for(kWatchdogPeriod);
      std::lock_guard<std::mutex> lock(mutex);
      if (stopping) return;
      ncclResult_t async_error = ncclSuccess;
      ncclCommGetAsyncError(comm, &async_error);
      if (async_error != ncclSuccess && async_error != ncclInProgress) {
        const std::string reason = std::string("NCCL reported an asynchronous error on ") + group + ": " +
                                   ncclGetErrorString(async_error) + " (" + process_label() + ")";
        LOG(ERROR) << reason;
        ncclCommAbort(comm);
        end_job(reason);
      }
      for (auto it = in_flight.begin(); it != in_flight.end();) {
        if ((*it)->is_completed()) {
          on_complete(**it);
          for (uint64_t id : (*it)->flight_ids) FlightRecorder::instance().set_state(id, OpState::kCompleted);
          it = in_flight.erase(it);
        } else if (Clock::now() > (*it)->deadline) {
          ncclCommAbort(comm);  // frees the GPU from the stuck kernel; the report names who never arrived
          end_job_on_hang((*it)->stuck);
        } else {
          ++it;
        }
      }
    }
  }
};

NcclBackend::NcclBackend(MPI_Comm group, std::string group_name, int device, Millis init_timeout, bool blocking_wait)
    : Backend(group, std::move(group_name)), state_(std::make_unique<State>()) {
  const auto [id_flight, seq] = FlightRecorder::instance().record(channel(), "nccl_init", "", 0);
  StuckOperation stuck = stuck_operation("nccl_init", describe_on_group("ncclCommInitRank"), seq, channel(), -1, false);
  stuck.waited_seconds = init_timeout.count() / 1000.0;
  ncclUniqueId id{};
  {
    DeadlineGuard guard(stuck, init_timeout);
    id = bootstrap_nccl_id(group);
  }
  state_->device = device;
  state_->blocking_wait = blocking_wait;
  state_->group = Backend::group_name();
  VLM_CUDA_CHECK(cudaSetDevice(device));
  // Nonblocking initialisation, polled against the deadline: a rank that never
  // joins cannot keep this one inside ncclCommInitRank forever.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const ncclResult_t started = ncclCommInitRankConfig(&state_->comm, size(), id, rank(), &config);
  wait_until_ready(state_->comm, started, Clock::now() + init_timeout, stuck);
  FlightRecorder::instance().set_state(id_flight, OpState::kCompleted);
  VLM_CUDA_CHECK(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking));
  VLM_CUDA_CHECK(cudaEventCreateWithFlags(&state_->compute_ready, cudaEventDisableTiming));
  VLM_CUDA_CHECK(cudaMalloc(&state_->barrier_word, sizeof(int)));
  state_->on_complete = [this](const NcclWork& w) { record(w.kind, const_cast<NcclWork&>(w).seconds(), w.bytes); };
  state_->watchdog = std::thread([state = state_.get()] { state->watch(); });
}

NcclBackend::~NcclBackend() {
  // Let in-flight work finish; the watchdog ends the job if it never does.
  while (true) {
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      if (state_->in_flight.empty()) break;
    }
    std::this_thread::sleep_for(kWatchdogPeriod);
  }
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->watchdog.join();
  if (cudaStreamSynchronize(state_->stream) != cudaSuccess) LOG(ERROR) << "NCCL stream failed at shutdown";
  state_->in_flight.clear();
  if (ncclCommDestroy(state_->comm) != ncclSuccess) LOG(ERROR) << "ncclCommDestroy failed for " << group_name();
  cudaFree(state_->barrier_word);
  cudaEventDestroy(state_->compute_ready);
  cudaStreamDestroy(state_->stream);
}

template <typename Launch>
WorkPtr NcclBackend::launch(const char* kind, int64_t bytes, Millis timeout, const std::vector<PointToPoint>& peers,
                            std::vector<torch::Tensor> keep_alive, Launch nccl_call) {
  auto work = std::make_shared<NcclWork>();
  work->kind = kind;
  work->bytes = bytes;
  work->what = describe_on_group(kind);
  // One flight record per channel: a collective's, or each peer's send or receive.
  const std::vector<PointToPoint> channels = peers.empty() ? std::vector<PointToPoint>{PointToPoint{}} : peers;
  for (const PointToPoint& p : channels) {
    const auto [flight_id, seq] = FlightRecorder::instance().record(channel(p.peer, p.sending), kind, "", bytes);
    if (work->flight_ids.empty()) {
      work->stuck = stuck_operation(kind, work->what, seq, channel(p.peer, p.sending), p.peer, p.sending);
    }
    work->flight_ids.push_back(flight_id);
  }
  work->stuck.waited_seconds = timeout.count() / 1000.0;
  work->timeout = timeout;
  work->deadline = Clock::now() + timeout;
  work->tensors = std::move(keep_alive);
  work->comm = state_->comm;
  work->blocking = state_->blocking_wait;
  VLM_CUDA_CHECK(cudaSetDevice(state_->device));
  // The communication stream starts after everything already queued on the compute stream.
  VLM_CUDA_CHECK(cudaEventRecord(state_->compute_ready, compute_stream()));
  VLM_CUDA_CHECK(cudaStreamWaitEvent(state_->stream, state_->compute_ready, 0));
  VLM_CUDA_CHECK(cudaEventCreate(&work->started));
  VLM_CUDA_CHECK(cudaEventCreate(&work->done));
  VLM_CUDA_CHECK(cudaEventRecord(work->started, state_->stream));
  wait_until_ready(state_->comm, nccl_call(state_->comm, state_->stream), work->deadline, work->stuck);
  VLM_CUDA_CHECK(cudaEventRecord(work->done, state_->stream));
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->in_flight.push_back(work);
  return work;
}

WorkPtr NcclBackend::allreduce(torch::Tensor t, const AllreduceOptions& o) {
  check_tensor(t, "allreduce");
  return launch("allreduce", t.nbytes(), o.timeout, {}, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), nccl_op(o.op), comm, stream);
  });
}

WorkPtr NcclBackend::broadcast(torch::Tensor t, const BroadcastOptions& o) {
  check_tensor(t, "broadcast");
  return launch("broadcast", t.nbytes(), o.timeout, {}, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), o.root, comm, stream);
  });
}

WorkPtr NcclBackend::allgather(torch::Tensor in, torch::Tensor out, const CollectiveOptions& o) {
  check_tensor(in, "allgather input");
  check_tensor(out, "allgather output");
  check_group_multiple("allgather", out, "output", in, "input");
  return launch("allgather", in.nbytes(), o.timeout, {}, {in, out}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), nccl_type(in.scalar_type()), comm, stream);
  });
}

WorkPtr NcclBackend::reduce_scatter(torch::Tensor in, torch::Tensor out, const AllreduceOptions& o) {
  check_tensor(in, "reduce_scatter input");
  check_tensor(out, "reduce_scatter output");
  check_group_multiple("reduce_scatter", in, "input", out, "output");
  return launch("reduce_scatter", in.nbytes(), o.timeout, {}, {in, out}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), nccl_type(out.scalar_type()),
                                     nccl_op(o.op), comm, stream);
  });
}

// A send and a receive between the same pair must be issued together
// (send_recv_batch, as the pipeline runtime does) or two ranks that both send
// first deadlock once messages exceed NCCL's buffers.
WorkPtr NcclBackend::send(torch::Tensor t, int destination, const PointToPointOptions& o) {
  check_tensor(t, "send");
  return launch("send", t.nbytes(), o.timeout, {{destination, true}}, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclSend(t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), destination, comm, stream);
  });
}

WorkPtr NcclBackend::recv(torch::Tensor t, int source, const PointToPointOptions& o) {
  check_tensor(t, "recv");
  return launch("recv", t.nbytes(), o.timeout, {{source, false}}, {t}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclRecv(t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), source, comm, stream);
  });
}

WorkPtr NcclBackend::send_recv_batch(const std::vector<PointToPointOp>& ops, Millis timeout) {
  std::vector<PointToPoint> peers;
  std::vector<torch::Tensor> tensors;
  int64_t bytes = 0;
  for (const auto& op : ops) {
    check_tensor(op.tensor, op.sending ? "send" : "recv");
    if (op.peer < 0 || op.peer >= size()) {
      throw CommError(describe_on_group("send_recv_batch") + ": peer " + std::to_string(op.peer) + " is not a rank of the group");
    }
    peers.push_back({op.peer, op.sending});
    tensors.push_back(op.tensor);
    bytes += op.tensor.nbytes();
  }
  if (ops.empty()) return completed_work();
  return launch("send_recv_batch", bytes, timeout, peers, tensors, [&](ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t result = ncclGroupStart();
    for (const auto& op : ops) {
      if (result != ncclSuccess) break;
      const torch::Tensor& t = op.tensor;
      result = op.sending ? ncclSend(t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), op.peer, comm, stream)
                          : ncclRecv(t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), op.peer, comm, stream);
    }
    const ncclResult_t ended = ncclGroupEnd();  // always closes the group it opened
    return result != ncclSuccess ? result : ended;
  });
}

WorkPtr NcclBackend::barrier(const CollectiveOptions& o) {
  return launch("barrier", 0, o.timeout, {}, {}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(state_->barrier_word, state_->barrier_word, 1, ncclInt32, ncclSum, comm, stream);
  });
}

}  // namespace vlm
