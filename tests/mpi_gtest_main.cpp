// gtest main for tests run under mpirun: MPI lives for the whole binary, and
// only rank 0 prints gtest's report (every rank still asserts; a failure on
// any rank fails the process and so the test).

#include <glog/logging.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include "comm/mpi_runtime.h"

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  vlm::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed != 0 && mpi.rank() == 0) std::fprintf(stderr, "a test failed on at least one rank\n");
  return any_failed;
}
