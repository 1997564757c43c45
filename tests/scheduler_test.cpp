#include <gtest/gtest.h>

#include <cmath>

#include "scheduler/lr_schedule.h"

namespace vlm {
namespace {

TEST(WarmupCosine, ClosedForm) {
  const WarmupCosine s{1.0, 0.1, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(4), 0.5);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);    // peak at the end of warm-up
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);   // cosine starts at the peak
  EXPECT_DOUBLE_EQ(s.at(109), 0.1);  // and ends at min_lr_ratio * peak
  const double half = 0.1 + 0.45 * (1 + std::cos(M_PI * 49.0 / 99.0));  // progress (59-10)/(110-10-1)
  EXPECT_NEAR(s.at(59) , half, 1e-12);
  for (int64_t t = 10; t < 109; ++t) EXPECT_GE(s.at(t), s.at(t + 1)) << t;
}

TEST(WarmupCosine, NoWarmup) {
  const WarmupCosine s{2.0, 0.0, 0, 3};
  EXPECT_DOUBLE_EQ(s.at(0), 2.0);
  EXPECT_DOUBLE_EQ(s.at(1), 1.0);
  EXPECT_DOUBLE_EQ(s.at(2), 0.0);
}

}  // namespace
}  // namespace vlm
