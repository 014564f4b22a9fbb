// The engine config: a DeepSpeed ZeRO-Infinity config moves over unchanged; every unknown key,
// wrong type, out-of-range value and contradiction is refused by its full path.
#include "src/engine/config.h"

#include <gtest/gtest.h>

namespace strata::engine {
namespace {

// As in DeepSpeed's ZeRO-Infinity tutorial, plus a "strata" section.
constexpr const char* kDeepSpeedConfig = R"({
  "train_batch_size": 32,
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 8,
  "gradient_clipping": 1.0,
  "steps_per_print": 10,
  "fp16": {"enabled": true, "loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 500,
           "hysteresis": 2, "min_loss_scale": 1},
  "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}},
  "zero_optimization": {
    "stage": 3,
    "contiguous_gradients": true,
    "overlap_comm": true,
    "reduce_bucket_size": 5e8,
    "stage3_prefetch_bucket_size": 5e7,
    "stage3_max_live_parameters": 1e9,
    "stage3_max_reuse_distance": 1e9,
    "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme", "pin_memory": true, "buffer_count": 4,
                          "fast_init": false},
    "offload_param": {"device": "cpu", "pin_memory": true, "buffer_count": 5}
  },
  "aio": {"block_size": 1048576, "queue_depth": 8, "intra_op_parallelism": 1, "single_submit": false,
          "overlap_events": true},
  // strata's own section (comments are allowed)
  "strata": {"device": "host", "device_bytes": 268435456, "host_bytes": 8589934592, "chunk_bytes": 33554432}
})";

TEST(EngineConfig, DeepSpeedConfigMovesOverUnchanged) {
  auto r = parse_engine_config(kDeepSpeedConfig);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const EngineConfig& c = r.value();
  EXPECT_EQ(c.precision, Precision::kFP16);
  EXPECT_EQ(c.loss_scale.initial_scale_power, 12);
  EXPECT_EQ(c.loss_scale.loss_scale_window, 500);
  EXPECT_EQ(c.gradient_accumulation_steps, 8);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
  EXPECT_EQ(c.optimizer.type, "AdamW");
  EXPECT_TRUE(c.optimizer.hyper.adam_w_mode);
  EXPECT_DOUBLE_EQ(c.optimizer.hyper.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.hyper.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optimizer.hyper.weight_decay, 0.1);
  EXPECT_EQ(c.placement.stage, 3);
  EXPECT_EQ(c.placement.offload_optimizer, OffloadTarget::kNvme);
  EXPECT_EQ(c.placement.offload_param, OffloadTarget::kCpu);
  EXPECT_EQ(c.placement.optimizer_buffer_count, 4);
  EXPECT_EQ(c.placement.param_buffer_count, 5);
  EXPECT_EQ(c.optimizer_nvme_path, "/local_nvme");
  EXPECT_EQ(c.reduce_bucket_size, 500'000'000u);
  EXPECT_EQ(c.prefetch_bucket_size, 50'000'000u);
  EXPECT_EQ(c.aio.queue_depth, 8);
  EXPECT_EQ(c.device, "host");
  EXPECT_EQ(c.device_bytes, size_t{256} << 20);
  EXPECT_EQ(c.chunk_bytes, size_t{32} << 20);
}

TEST(EngineConfig, DefaultsFromAnEmptyObject) {
  auto r = parse_engine_config("{}");
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r.value().precision, Precision::kBF16);
  EXPECT_EQ(r.value().placement.stage, 0);
  EXPECT_EQ(r.value().device, "auto");
  EXPECT_TRUE(r.value().overlap);
  EXPECT_EQ(r.value().trace_path, "");
  EXPECT_FALSE(r.value().step_summary);
}

TEST(EngineConfig, OverlapTraceAndSummaryKeys) {
  auto r = parse_engine_config(
      R"({"strata": {"overlap": false, "trace": "/tmp/t.json", "step_summary": true},
          "zero_optimization": {"stage3_prefetch_bucket_size": 1e6, "stage3_max_live_parameters": 3e6,
                                "stage3_max_reuse_distance": 0}})");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_FALSE(r.value().overlap);
  EXPECT_EQ(r.value().trace_path, "/tmp/t.json");
  EXPECT_TRUE(r.value().step_summary);
  EXPECT_EQ(r.value().prefetch_bucket_size, 1'000'000u);
  EXPECT_EQ(r.value().max_live_parameters, 3'000'000u);
  EXPECT_EQ(r.value().max_reuse_distance, 0u);
}

void expect_error(const std::string& json, const char* needle) {
  auto r = parse_engine_config(json);
  ASSERT_FALSE(r.is_ok()) << json;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

TEST(EngineConfig, ErrorsNameTheKeyByItsPath) {
  expect_error(R"({"zero_optimization": {"offload_optimizer": {"device": "cpu", "nvme_pth": "/x"}}})",
               "zero_optimization.offload_optimizer.nvme_pth: unknown key (known here: device, nvme_path");
  expect_error(R"({"wall_clock_breakdown": true})", "wall_clock_breakdown: unknown key");
  expect_error(R"({"zero_optimization": {"stage": 4}})", "zero_optimization.stage = 4: expected an integer in 0 .. 3");
  expect_error(R"({"zero_optimization": {"stage": "3"}})", "zero_optimization.stage: expected an integer, got \"3\"");
  expect_error(R"({"zero_optimization": {"offload_param": {"device": "gpu"}}})",
               "zero_optimization.offload_param.device = \"gpu\": expected one of none, cpu, nvme");
  expect_error(R"({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}}})",
               "zero_optimization.offload_optimizer.nvme_path: required when "
               "zero_optimization.offload_optimizer.device is \"nvme\"");
  expect_error(R"({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}})",
               "offload_param needs zero_optimization.stage = 3, not 2");
  expect_error(R"({"zero_optimization": {"offload_optimizer": {"device": "cpu", "ratio": 1.5}}})",
               "zero_optimization.offload_optimizer.ratio = 1.5");
  expect_error(R"({"fp16": {"enabled": true}, "bf16": {"enabled": true}})", "both true");
  expect_error(R"({"optimizer": {"type": "Lamb"}})",
               "optimizer.type: optimizer type \"Lamb\" is not one strata has (accepted: Adam, AdamW, Lion, Adagrad)");
  expect_error(
      R"({"optimizer": {"type": "Lion", "params": {"eps": 1e-8}}})",
      "optimizer.params.eps: unknown key (known here: lr, betas, weight_decay) — Lion has no such hyper-parameter");
  expect_error(R"({"optimizer": {"type": "Adagrad", "params": {"betas": [0.9, 0.99]}}})",
               "optimizer.params.betas: unknown key (known here: lr, eps, weight_decay)");
  expect_error(R"({"optimizer": {"params": {"betas": [0.9]}}})", "optimizer.params.betas: expected [beta1, beta2]");
  expect_error(R"({"optimizer": {"params": {"betas": [0.9, 1.0]}}})", "each must be in [0, 1)");
  expect_error(R"({"gradient_accumulation_steps": 0})", "gradient_accumulation_steps = 0");
  expect_error(R"({"gradient_accumulation_steps": 2.5})", "gradient_accumulation_steps = 2.5");
  expect_error(R"({"aio": {"queue_depth": 0}})", "aio.queue_depth = 0: expected an integer in 1 .. 1024");
  expect_error(R"({"aio": {"use_gds": true}})", "aio.use_gds: unknown key");
  expect_error(R"({"strata": {"device": "host"}})", "strata.device_bytes: required");
  expect_error(R"({"strata": {"device": "tpu"}})", "strata.device = \"tpu\"");
  expect_error(R"({"fp16": []})", "fp16: expected an object");
  expect_error(R"({"strata": {"overlap": "yes"}})", "strata.overlap: expected true or false");
  expect_error(R"({"strata": {"trace": 1}})", "strata.trace: expected a string");
  expect_error(R"([1])", "config: expected an object");
  expect_error(R"({"stage": )", "config: line 1, column 10: syntax error");
  expect_error("{\n  \"stage\": 1,\n  \"x\": tru\n}", "config: line 3, column");
  expect_error(R"({"gradient_clipping": 1e999})", "config: number overflow parsing");
  expect_error(R"({"zero_optimization": {"stage": 99999999999999999999}})",
               "zero_optimization.stage = 1e+20: expected an integer in 0 .. 3");
  expect_error(R"({"strata": {"device_bytes": 1e30}})",
               "strata.device_bytes = 1e+30: expected an integer in 0 .. 72057594037927936");
  expect_error(R"({"strata": {"seed": -1}})", "strata.seed = -1: expected an integer in 0 ..");
}

// Lion and Adagrad by DeepSpeed's names (any case), with DeepSpeed's defaults for what is not given.
TEST(EngineConfig, LionAndAdagradTakeTheirOwnKeysAndDefaults) {
  auto lion = parse_engine_config(R"({"optimizer": {"type": "lion", "params": {"lr": 1e-4, "betas": [0.95, 0.98]}}})");
  ASSERT_TRUE(lion.is_ok()) << lion.status().to_string();
  EXPECT_EQ(lion.value().optimizer.type, "Lion");
  EXPECT_DOUBLE_EQ(lion.value().optimizer.hyper.lr, 1e-4);
  EXPECT_DOUBLE_EQ(lion.value().optimizer.hyper.beta1, 0.95);
  EXPECT_DOUBLE_EQ(lion.value().optimizer.hyper.beta2, 0.98);
  EXPECT_DOUBLE_EQ(lion.value().optimizer.hyper.weight_decay, 0.0);
  auto ada = parse_engine_config(R"({"optimizer": {"type": "Adagrad", "params": {"weight_decay": 0.01}}})");
  ASSERT_TRUE(ada.is_ok()) << ada.status().to_string();
  EXPECT_EQ(ada.value().optimizer.type, "Adagrad");
  EXPECT_DOUBLE_EQ(ada.value().optimizer.hyper.lr, 1e-2);
  EXPECT_DOUBLE_EQ(ada.value().optimizer.hyper.eps, 1e-10);
  EXPECT_DOUBLE_EQ(ada.value().optimizer.hyper.weight_decay, 0.01);
  auto adam = parse_engine_config(R"({"optimizer": {"type": "ADAM"}})");
  ASSERT_TRUE(adam.is_ok());
  EXPECT_EQ(adam.value().optimizer.type, "Adam");
  EXPECT_FALSE(adam.value().optimizer.hyper.adam_w_mode);
}

// strata.nvme_rewrite: in place by default (one copy of each NVMe array on disk), A/B slots on request.
TEST(EngineConfig, NvmeRewriteModeSetsTheDiskCopies) {
  auto d = parse_engine_config("{}");
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d.value().nvme_rewrite, "in_place");
  EXPECT_EQ(d.value().placement.nvme_copies, 1u);
  auto ab = parse_engine_config(R"({"strata": {"nvme_rewrite": "ab_slots"}})");
  ASSERT_TRUE(ab.is_ok()) << ab.status().to_string();
  EXPECT_EQ(ab.value().placement.nvme_copies, 2u);
  auto bad = parse_engine_config(R"({"strata": {"nvme_rewrite": "copy"}})");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("strata.nvme_rewrite = \"copy\": expected one of in_place, ab_slots"),
            std::string::npos)
      << bad.status().to_string();
}

// strata.speculate_device: off by default; on reaches the planner only with speculate and overlap.
TEST(EngineConfig, SpeculateDeviceNeedsSpeculateAndOverlap) {
  auto d = parse_engine_config("{}");
  ASSERT_TRUE(d.is_ok());
  EXPECT_TRUE(d.value().placement.speculate);
  EXPECT_FALSE(d.value().placement.speculate_device);
  auto on = parse_engine_config(R"({"strata": {"speculate_device": true}})");
  ASSERT_TRUE(on.is_ok()) << on.status().to_string();
  EXPECT_TRUE(on.value().placement.speculate_device);
  for (const char* off : {R"({"strata": {"speculate_device": true, "speculate": false}})",
                          R"({"strata": {"speculate_device": true, "overlap": false}})"}) {
    auto c = parse_engine_config(off);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    EXPECT_FALSE(c.value().placement.speculate_device) << off;
  }
  auto bad = parse_engine_config(R"({"strata": {"speculate_device": "yes"}})");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("strata.speculate_device"), std::string::npos) << bad.status().to_string();
}

// strata.gradient_tier: auto by default; host and nvme reach the planner; anything else is named.
TEST(EngineConfig, GradientTierReachesThePlanner) {
  using GradTier = PlacementConfig::GradTier;
  auto d = parse_engine_config("{}");
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d.value().gradient_tier, "auto");
  EXPECT_EQ(d.value().placement.gradient_tier, GradTier::kAuto);
  for (const auto& [text, tier] : {std::pair{"host", GradTier::kHost}, std::pair{"nvme", GradTier::kNvme}}) {
    auto c = parse_engine_config(std::string(R"({"strata": {"gradient_tier": ")") + text + R"("}})");
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    EXPECT_EQ(c.value().placement.gradient_tier, tier) << text;
  }
  auto bad = parse_engine_config(R"({"strata": {"gradient_tier": "disk"}})");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("strata.gradient_tier = \"disk\": expected one of auto, host, nvme"),
            std::string::npos)
      << bad.status().to_string();
}

}  // namespace
}  // namespace strata::engine
