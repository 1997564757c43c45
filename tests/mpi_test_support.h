#pragma once
// Helpers the multi-rank tests share.

#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "model/parameters.h"
#include "proto/config_loader.h"
#include "trainer/training_data.h"

namespace vlm {

// Fashion-MNIST as configs/tiny_test.pbtxt reads it, loaded once per process.
inline const TrainingData& tiny_data() {
  static const auto data =
      load_training_data(load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt").data());
  return *data;
}

// All unique parameters as raw bytes, in registration order.
inline std::vector<uint8_t> parameter_bytes(const torch::nn::Module& model) {
  std::vector<uint8_t> bytes;
  for (const torch::Tensor& t : unique_tensors(model)) {
    const torch::Tensor c = t.detach().cpu().contiguous();  // a GPU tensor too
    const auto* p = static_cast<const uint8_t*>(c.data_ptr());
    bytes.insert(bytes.end(), p, p + c.nbytes());
  }
  return bytes;
}

// One temporary folder for the whole job, named after rank 0's process.
inline std::string shared_root(const std::string& name) {
  int pid = getpid();
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return (std::filesystem::temp_directory_path() / ("vlm_" + name + "_" + std::to_string(pid))).string();
}

// A shared_root that every rank leaves together and rank 0 then deletes,
// however the test ends (a failed assertion too).
class SharedDirectory {
 public:
  explicit SharedDirectory(const std::string& name) : path_(shared_root(name)) {}
  ~SharedDirectory() {
    MPI_Barrier(MPI_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::filesystem::remove_all(path_);
  }
  SharedDirectory(const SharedDirectory&) = delete;
  SharedDirectory& operator=(const SharedDirectory&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace vlm
