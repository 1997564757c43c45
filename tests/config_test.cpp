// The config loader: each kind of user error produces a message that names
// where it is and what would be accepted.

#include <gtest/gtest.h>

#include "proto/config_loader.h"

namespace vlm {
namespace {

std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, "exp.pbtxt", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Config, DefaultsAndValuesAreRead) {
  TrainConfig c = parse_config("optim { lr: 0.5 }\nmodel { text { max_tokens: 16 } }", "exp.pbtxt");
  EXPECT_DOUBLE_EQ(c.optim().lr(), 0.5);
  EXPECT_EQ(c.model().text().max_tokens(), 16);
  EXPECT_EQ(c.model().d_model(), 64);  // default
}

TEST(Config, SyntaxErrorReportsFileLineColumn) {
  const std::string e = error_of("optim {\n  lr: 0.1\n  warmup_steps 5\n}\n");
  EXPECT_NE(e.find("exp.pbtxt:3:"), std::string::npos) << e;
}

TEST(Config, UnknownFieldNamesItAndListsTheValidOnes) {
  const std::string e = error_of("optim {\n  lrr: 0.1\n}\n");
  EXPECT_NE(e.find("exp.pbtxt:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("\"lrr\""), std::string::npos) << e;
  EXPECT_NE(e.find("OptimConfig has the fields: lr, min_lr_ratio"), std::string::npos) << e;
}

TEST(Config, WrongTypeIsReportedWithItsPosition) {
  const std::string e = error_of("loop { steps: \"many\" }");
  EXPECT_NE(e.find("exp.pbtxt:1:"), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
}

TEST(Config, OutOfRangeNamesFieldLineAndAllowedRange) {
  const std::string e = error_of("model {\n  d_model: 4\n}\n");
  EXPECT_NE(e.find("exp.pbtxt:2:3: model.d_model = 4 is out of range; allowed [8, 16384]"), std::string::npos) << e;
}

TEST(Config, OverrideSetsNestedFields) {
  TrainConfig c = parse_config("", "exp.pbtxt", {"optim.lr=3e-4", "data.task=PAIR", "metrics.run_name=abc"});
  EXPECT_DOUBLE_EQ(c.optim().lr(), 3e-4);
  EXPECT_EQ(c.data().task(), DataConfig::PAIR);
  EXPECT_EQ(c.metrics().run_name(), "abc");
}

// A list given with --set replaces the config's, as every other --set does.
TEST(Config, OverrideReplacesAList) {
  const std::string file = "data { train_shards: \"a.tar\" train_shards: \"b.tar\" pixel_mean: [0.2, 0.3, 0.4] }";
  TrainConfig c = parse_config(file, "exp.pbtxt", {"data.train_shards=c.tar", "data.pixel_mean=0.5"});
  ASSERT_EQ(c.data().train_shards_size(), 1);
  EXPECT_EQ(c.data().train_shards(0), "c.tar");
  ASSERT_EQ(c.data().pixel_mean_size(), 1);
  EXPECT_FLOAT_EQ(c.data().pixel_mean(0), 0.5f);
  c = parse_config(file, "exp.pbtxt", {"data.pixel_mean=[0.1, 0.2, 0.3]"});
  ASSERT_EQ(c.data().pixel_mean_size(), 3);
  EXPECT_FLOAT_EQ(c.data().pixel_mean(2), 0.3f);
  // Twice would keep only the second: refused, with the way to give both.
  const std::string e = error_of(file, {"data.train_shards=c.tar", "data.train_shards=d.tar"});
  EXPECT_NE(e.find("data.train_shards is a list, already given by --set data.train_shards=c.tar"), std::string::npos) << e;
  c = parse_config(file, "exp.pbtxt", {"data.train_shards=[\"d.tar\", \"e.tar\"]"});
  ASSERT_EQ(c.data().train_shards_size(), 2);
  EXPECT_EQ(c.data().train_shards(1), "e.tar");
}

// An override sets its field and no other: its value cannot end the field's
// message and open another, and a string may hold any character.
TEST(Config, OverrideValueCannotReachOtherFields) {
  const std::string e = error_of("", {"loop.steps=2 } model { d_model: 9"});
  EXPECT_NE(e.find("a value cannot hold '{', '}', ':', '#' or a line break"), std::string::npos) << e;
  TrainConfig c = parse_config("", "exp.pbtxt", {"metrics.run_name=a \"quoted\" } name\\"});
  EXPECT_EQ(c.metrics().run_name(), "a \"quoted\" } name\\");
  c = parse_config("", "exp.pbtxt", {"data.train_shards=[\"s3:a-{0..2}.tar\", \"b.tar\"]"});  // inside strings: text
  EXPECT_EQ(c.data().train_shards(0), "s3:a-{0..2}.tar");
}

TEST(Config, OverrideOfUnknownFieldListsFields) {
  const std::string e = error_of("", {"optim.lrr=1"});
  EXPECT_NE(e.find("--set optim.lrr=1: unknown field 'optim.lrr'"), std::string::npos) << e;
  EXPECT_NE(e.find("lr, min_lr_ratio"), std::string::npos) << e;
}

TEST(Config, UnknownEnumValueListsTheValidOnes) {
  std::string e = error_of("data { task: FOO }");
  EXPECT_NE(e.find("exp.pbtxt:1:"), std::string::npos) << e;
  EXPECT_NE(e.find("\"FOO\" for field \"task\". HINT: Task takes SINGLE, PAIR, MIXED"), std::string::npos) << e;
  e = error_of("", {"device.kind=TPU"});
  EXPECT_NE(e.find("--set device.kind=TPU: "), std::string::npos) << e;
  EXPECT_NE(e.find("Kind takes AUTO, CPU, CUDA"), std::string::npos) << e;
}

TEST(Config, OverrideWithWrongTypeNamesTheOverride) {
  const std::string e = error_of("", {"loop.steps=ten"});
  EXPECT_NE(e.find("--set loop.steps=ten: "), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
}

TEST(Config, OverrideOutOfRangeIsBlamedOnTheOverride) {
  const std::string e = error_of("loop { steps: 5 }", {"loop.steps=0"});
  EXPECT_NE(e.find("--set loop.steps=0: loop.steps = 0 is out of range; allowed [1, 1e+09]"), std::string::npos) << e;
}

TEST(Config, MalformedOverride) {
  EXPECT_NE(error_of("", {"optim.lr"}).find("expected FIELD.PATH=VALUE"), std::string::npos);
  EXPECT_NE(error_of("", {"optim=1"}).find("is a message"), std::string::npos);
}

TEST(Config, CrossFieldRuleShowsArithmetic) {
  const std::string e = error_of("model { d_model: 30 heads: 4 }");
  EXPECT_NE(e.find("model.d_model(30) must be divisible by model.heads(4)"), std::string::npos) << e;
}

TEST(Config, PatchesMustTileTheImageTheModelSees) {
  EXPECT_NE(error_of("model { vision { patch_size: 8 } }").find("must divide the Fashion-MNIST image side 28"),
            std::string::npos);
  const std::string shards = "data { train_shards: \"s.tar\" image_height: 64 image_width: 64 }\n";
  EXPECT_EQ(error_of(shards + "model { vision { patch_size: 8 } }"), "(no error)");
  const std::string e = error_of(shards + "model { vision { patch_size: 8 } }", {"data.image_width=30"});
  EXPECT_NE(e.find("--set data.image_width=30: data.image_width(30) must be a multiple of "
                   "model.vision.patch_size(8): the patches tile the image; use 24 or 32"),
            std::string::npos)
      << e;
  const std::string small = error_of(shards + "model { vision { patch_size: 8 } }", {"data.image_height=5"});
  EXPECT_NE(small.find("the patches tile the image; use 8"), std::string::npos) << small;
}

TEST(Config, FloatFieldAcceptsItsBounds) {
  EXPECT_EQ(error_of("model { vision { token_pruning { keep_ratio: 0.01 } } }"), "(no error)");
  EXPECT_NE(error_of("model { vision { token_pruning { keep_ratio: 0.0099 } } }").find("out of range"),
            std::string::npos);
}

TEST(Config, ZeroShotPromptNamesTheClass) {
  const std::string e = error_of("", {"eval.zero_shot_prompt=hello"});
  EXPECT_NE(e.find("eval.zero_shot_prompt \"hello\" has no {} for the class name"), std::string::npos) << e;
}

TEST(Config, ContrastiveLossNeedsTwoSamplesPerMicroBatch) {
  const std::string e = error_of("loop { global_batch_size: 4 micro_batches: 4 }");
  EXPECT_EQ(e.rfind("exp.pbtxt:1:", 0), 0u) << e;  // where global_batch_size is set
  EXPECT_NE(e.find("loop.global_batch_size(4) / loop.micro_batches(4) leaves fewer than 2 samples "
                   "per micro-batch; with one, the contrastive loss is always 0"),
            std::string::npos)
      << e;
  EXPECT_EQ(error_of("loop { global_batch_size: 4 micro_batches: 2 }"), "(no error)");
  EXPECT_EQ(error_of("loop { global_batch_size: 1 } model { contrastive_weight: 0 }"), "(no error)");
}

TEST(Config, MissingFileSaysHowToFixIt) {
  try {
    load_config("/nonexistent/x.pbtxt");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.pbtxt: cannot open"), std::string::npos);
  }
}

TEST(Config, ShippedConfigsAreValid) {
  for (const char* name : {"fashion_mnist", "fashion_mnist_best", "tiny_test", "bench", "pipeline_bench"}) {
    EXPECT_NO_THROW(load_config(std::string(VLM_SOURCE_DIR) + "/configs/" + name + ".pbtxt")) << name;
  }
}

TEST(Config, ResolvedTextShowsDefaults) {
  const std::string text = resolved_config_text(parse_config("", "exp.pbtxt"));
  EXPECT_NE(text.find("d_model: 64"), std::string::npos) << text;
  EXPECT_NO_THROW(parse_config(text, "resolved"));  // and reads back
}

}  // namespace
}  // namespace vlm
