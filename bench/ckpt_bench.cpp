// vlm-ckpt-bench: checkpoint save and load throughput against a plain
// sequential write (with fsync) and read of the same number of bytes, in the
// same run; and the training stall of an asynchronous save against the time
// of a synchronous one, with the step time alone and during the save. Best of
// 3 for each; one process.
//
//   build/bench/vlm-ckpt-bench [--config configs/bench.pbtxt] [--dir /tmp]

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/format.h"
#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "proto/config_loader.h"
#include "trainer/trainer.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

template <typename Work>
double best_of_3(Work work) {
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    work();
    best = std::min(best, seconds_since(start));
  }
  return best;
}

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"config", std::string(VLM_SOURCE_DIR) + "/configs/bench.pbtxt"}, {"dir", "/tmp"}});
  const std::string root = flags["dir"] + "/vlm_ckpt_bench_" + std::to_string(getpid());
  const TrainConfig config = load_config(flags["config"], {"loop.steps=1"});
  const Topology topology = make_topology(detect_process(), 1, 0);
  apply_thread_count(static_cast<int>(std::thread::hardware_concurrency()));
  ProcessGroups groups(topology);
  const auto data = load_training_data(config.data());
  Trainer trainer(config, topology, groups, *data);
  trainer.train_step();  // creates the optimizer state

  int saves = 0;  // a step is saved once per folder
  const double save = best_of_3([&] { trainer.save_checkpoint(root + "/save" + std::to_string(saves++), 1); });
  const std::string directory = resolve_checkpoint(root + "/save0", "latest");
  const uint64_t bytes = fs::file_size(directory + "/shard-00000.bin");
  const double load = best_of_3([&] { trainer.load_checkpoint(directory); });

  // The same bytes, written sequentially with one fsync, and read back.
  std::vector<char> buffer(bytes, 1);
  const std::string plain = root + "/plain.bin";
  const double write = best_of_3([&] {
    const int fd = ::open(plain.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (uint64_t done = 0; done < bytes;) done += static_cast<uint64_t>(::write(fd, buffer.data() + done, bytes - done));
    ::fsync(fd);
    ::close(fd);
  });
  const double read = best_of_3([&] {
    std::ifstream in(plain, std::ios::binary);
    in.read(buffer.data(), static_cast<std::streamsize>(bytes));
  });

  // Asynchronous: training stalls for the save() call (the snapshot's
  // metadata and RNG state) and, in the next step, for the optimizer step's
  // wait on the copy, which runs during that step's forward and backward.
  double stall = 1e30, plain_step = 1e30, step_during_save = 1e30;
  for (int i = 0; i < 3; ++i) {
    plain_step = std::min(plain_step, trainer.train_step().seconds);
    const auto start = Clock::now();
    trainer.save_checkpoint(root + "/async", 1, /*async=*/true);
    const double call = seconds_since(start);
    const StepStats next = trainer.train_step();
    trainer.wait_for_checkpoint();
    stall = std::min(stall, call + next.checkpoint_wait_seconds);
    step_during_save = std::min(step_during_save, next.seconds);
  }
  fs::remove_all(root);

  const double gb = static_cast<double>(bytes) / 1e9;
  std::printf("checkpoint of %s: %.1f MB (parameters and AdamW state), one process, best of 3\n",
              flags["config"].c_str(), bytes / 1e6);
  std::printf("save  %7.3f s  %6.2f GB/s   plain write+fsync %7.3f s  %6.2f GB/s   ratio %.3f\n", save, gb / save, write,
              gb / write, write / save);
  std::printf("load  %7.3f s  %6.2f GB/s   plain read        %7.3f s  %6.2f GB/s   ratio %.3f\n", load, gb / load, read,
              gb / read, read / load);
  std::printf("async save stall %.5f s = %.2f%% of the synchronous save\n", stall, 100 * stall / save);
  std::printf("training step %.3f s alone, %.3f s while an asynchronous save copies and writes (%+.1f%%)\n", plain_step,
              step_during_save, 100 * (step_during_save / plain_step - 1));
  std::printf("{\"bench\":\"checkpoint\",\"bytes\":%llu,\"save_s\":%.4f,\"plain_write_s\":%.4f,\"load_s\":%.4f,"
              "\"plain_read_s\":%.4f,\"async_stall_s\":%.5f,\"step_s\":%.4f,\"step_during_save_s\":%.4f}\n",
              static_cast<unsigned long long>(bytes), save, write, load, read, stall, plain_step, step_during_save);
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-ckpt-bench", argc, argv, vlm::bench); }
