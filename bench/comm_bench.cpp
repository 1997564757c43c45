// vlm-commbench: allreduce bandwidth of comm::Backend, in the manner of
// nccl-tests, with raw MPI_Allreduce on the same buffers in the same run so the
// ratio is read off directly. For each size: warm-up, then timed rounds that
// alternate raw MPI and the backend (the best round of each is kept, since the
// machine is shared), then a correctness pass with rank-filled data.
// algbw = bytes / time; busbw = algbw x 2(n-1)/n (what each link carries).
// Prints a table and one JSON line per size; exits non-zero on wrong data.
//
//   mpirun -np 2 build/bench/vlm-commbench [--min-bytes 4096] [--max-bytes 268435456]

#include <chrono>
#include <cstdio>
#include <string>

#include "comm/mpi_backend.h"
#include "comm/mpi_check.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

int iterations_for(int64_t bytes) {
  if (bytes <= (1 << 20)) return 200;
  if (bytes <= (16 << 20)) return 20;
  return 4;
}

// Mean seconds per allreduce over `iterations`, all ranks starting together.
template <typename Op>
double time_rounds(int iterations, Op op) {
  VLM_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  const auto start = Clock::now();
  for (int i = 0; i < iterations; ++i) op();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count() / iterations;
  // The slowest rank defines the collective's time.
  VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return seconds;
}

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"min-bytes", "4096"}, {"max-bytes", "268435456"}});
  const int64_t min_bytes = std::stoll(flags["min-bytes"]), max_bytes = std::stoll(flags["max-bytes"]);
  MpiBackend mpi(MPI_COMM_WORLD, "world");
  Backend& backend = mpi;
  const int rank = backend.rank(), size = backend.size();
  const double bus_factor = 2.0 * (size - 1) / size;
  if (rank == 0) {
    std::printf("allreduce float32 sum, %d ranks; time = best round, us\n", size);
    std::printf("%12s %10s %10s %10s %10s %10s %10s %7s %6s\n", "bytes", "mpi_us", "mpi_busbw", "vlm_us",
                "vlm_algbw", "vlm_busbw", "", "ratio", "check");
  }
  bool all_correct = true;
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const int64_t n = bytes / 4;
    torch::Tensor buffer = torch::zeros({n});
    float* data = buffer.data_ptr<float>();
    const int iterations = iterations_for(bytes);
    auto raw = [&] {
      VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    };
    auto ours = [&] { backend.allreduce(buffer, {ReduceOp::kSum})->wait(); };
    time_rounds(std::max(1, iterations / 4), raw);  // warm-up
    time_rounds(std::max(1, iterations / 4), ours);
    double raw_best = 1e30, ours_best = 1e30;
    for (int round = 0; round < 3; ++round) {
      raw_best = std::min(raw_best, time_rounds(iterations, raw));
      ours_best = std::min(ours_best, time_rounds(iterations, ours));
    }
    // Correctness: rank-filled input, closed form size(size+1)/2, on every rank.
    buffer.fill_(static_cast<float>(rank + 1));
    ours();
    int correct = buffer.eq(static_cast<float>(size * (size + 1) / 2)).all().item<bool>() ? 1 : 0;
    VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &correct, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    all_correct &= correct == 1;

    const double gb = static_cast<double>(bytes) / 1e9;
    const double raw_bus = gb / raw_best * bus_factor, algbw = gb / ours_best, busbw = algbw * bus_factor;
    if (rank == 0) {
      std::printf("%12lld %10.1f %10.3f %10.1f %10.3f %10.3f %10s %7.3f %6s\n", static_cast<long long>(bytes),
                  raw_best * 1e6, raw_bus, ours_best * 1e6, algbw, busbw, "GB/s", busbw / raw_bus,
                  correct ? "ok" : "WRONG");
      std::printf("{\"bench\":\"allreduce\",\"ranks\":%d,\"bytes\":%lld,\"mpi_seconds\":%.9f,\"mpi_busbw_gbs\":%.4f,"
                  "\"vlm_seconds\":%.9f,\"vlm_algbw_gbs\":%.4f,\"vlm_busbw_gbs\":%.4f,\"ratio\":%.4f,\"correct\":%s}\n",
                  size, static_cast<long long>(bytes), raw_best, raw_bus, ours_best, algbw, busbw, busbw / raw_bus,
                  correct ? "true" : "false");
      std::fflush(stdout);
    }
  }
  return all_correct ? 0 : 1;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-commbench", argc, argv, vlm::bench); }
