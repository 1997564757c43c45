// The evaluation summary that vlm-train prints: what was not measured says
// n/a and why, rather than a rate of 0.
#include <gtest/gtest.h>

#include "trainer/evaluate.h"

namespace vlm {
namespace {

TEST(EvalSummary, WhatWasNotMeasuredSaysNotApplicable) {
  EvalResult r;
  r.zero_shot_images = 10000, r.zero_shot_accuracy = 0.9;
  const std::string text = r.summary();
  EXPECT_NE(text.find("zero-shot accuracy   0.9000  (10000 images"), std::string::npos) << text;
  EXPECT_NE(text.find("retrieval R@1        n/a (the SINGLE task"), std::string::npos) << text;
  EXPECT_NE(text.find("caption exact match  n/a (eval.caption_samples is 0)"), std::string::npos) << text;
}

TEST(EvalSummary, CaptionRateNamesItsSampleCount) {
  EvalResult r;
  r.caption_samples = 64, r.caption_exact_match = 0.25;
  const std::string text = r.summary();
  EXPECT_NE(text.find("caption exact match  0.2500  (64 held-out samples"), std::string::npos) << text;
}

}  // namespace
}  // namespace vlm
