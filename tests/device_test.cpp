// Device choice (a pure function of the request, the local rank and the
// visible GPUs, so it is tested here without a GPU) and bf16 autocast on the CPU.

#include <gtest/gtest.h>

#include <cstdlib>

#include "comm/device.h"
#include "model/autocast.h"

namespace vlm {
namespace {

std::string error_of(DeviceRequest request, int local_rank, int local_size, VisibleGpus gpus) {
  try {
    choose_device(request, local_rank, local_size, gpus, "node7");
  } catch (const DeviceError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Device, CpuWhenAskedOrWhenAutoFindsNoGpu) {
  EXPECT_EQ(choose_device(DeviceRequest::kCpu, 0, 1, {4, ""}, "node7"), torch::Device(torch::kCPU));
  EXPECT_EQ(choose_device(DeviceRequest::kAuto, 0, 1, {0, "no CUDA device found"}, "node7"), torch::Device(torch::kCPU));
}

TEST(Device, EachLocalRankTakesItsOwnGpu) {
  for (DeviceRequest request : {DeviceRequest::kAuto, DeviceRequest::kCuda}) {
    EXPECT_EQ(choose_device(request, 0, 4, {4, ""}, "node7"), torch::Device(torch::kCUDA, 0));
    EXPECT_EQ(choose_device(request, 3, 4, {8, ""}, "node7"), torch::Device(torch::kCUDA, 3));
  }
}

TEST(Device, CudaWithoutAGpuNamesTheHostAndTheReason) {
  unsetenv("CUDA_VISIBLE_DEVICES");
  const std::string e = error_of(DeviceRequest::kCuda, 0, 1, {0, "no CUDA device found"});
  EXPECT_NE(e.find("device.kind is CUDA, but no GPU is visible on node7: no CUDA device found"), std::string::npos) << e;
  EXPECT_NE(e.find("HINT"), std::string::npos) << e;
}

TEST(Device, MoreLocalRanksThanGpusIsAnErrorNamingTheHostAndTheMask) {
  setenv("CUDA_VISIBLE_DEVICES", "2,3", 1);
  for (DeviceRequest request : {DeviceRequest::kAuto, DeviceRequest::kCuda}) {
    const std::string e = error_of(request, 0, 4, {2, ""});
    EXPECT_NE(e.find("node7 runs 4 ranks but sees 2 GPUs (CUDA_VISIBLE_DEVICES=2,3)"), std::string::npos) << e;
    EXPECT_NE(e.find("--nproc-per-node 2"), std::string::npos) << e;
  }
  unsetenv("CUDA_VISIBLE_DEVICES");
}

TEST(Device, ThisMachinesGpusAsLibTorchSeesThem) {
  const VisibleGpus gpus = visible_gpus();
  if (gpus.count > 0) GTEST_SKIP() << gpus.count << " GPUs visible; this checks the reason given when there are none";
  EXPECT_FALSE(gpus.why_none.empty());
}

TEST(Autocast, Bf16MatrixProductsInsideFloat32Outside) {
  torch::nn::Linear linear(8, 4);
  const torch::Tensor x = torch::randn({2, 8});
  {
    const AutocastGuard autocast(torch::kCPU, true);
    EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
    EXPECT_EQ(linear->weight.scalar_type(), torch::kFloat);  // the master weights stay float32
    {
      const AutocastGuard nested(torch::kCPU, true);
      EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16) << "a nested guard must restore the outer state";
  }
  EXPECT_EQ(linear(x).scalar_type(), torch::kFloat);
  const AutocastGuard off(torch::kCPU, false);
  EXPECT_EQ(linear(x).scalar_type(), torch::kFloat);
}

TEST(Autocast, GradientsReachFloat32Weights) {
  torch::nn::Linear linear(8, 4);
  {
    const AutocastGuard autocast(torch::kCPU, true);
    linear(torch::randn({2, 8})).sum().backward();
  }
  ASSERT_TRUE(linear->weight.grad().defined());
  EXPECT_EQ(linear->weight.grad().scalar_type(), torch::kFloat);
}

}  // namespace
}  // namespace vlm
