// The training loop of `strata train`: the GPT model of gpt.h trained through the engine on
// byte-level data — params registered with GPT-2's initialisation, a warm-up + cosine learning
// rate, gradient accumulation and loss scaling by the engine, validation at intervals,
// checkpoints and resume. Reports one progress line per optimizer step and a summary.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "src/engine/engine.h"
#include "src/train/data.h"
#include "src/train/gpt.h"

namespace strata::train {

struct TrainOptions {
  GptShape shape;
  int batch = 4;              // sequences per micro-batch
  int seq = 64;               // tokens per sequence
  int64_t steps = 50;         // optimizer steps to reach (a resumed run continues up to it)
  double lr = 3e-3;           // peak learning rate
  double min_lr_ratio = 0.1;  // cosine decays to lr * this at the last step
  int warmup = 10;            // linear warm-up steps
  int val_every = 25;         // validation loss every this many steps (0: only at the end)
  int val_batches = 4;
  bool checkpointing = false;  // activation checkpointing (recompute each block in backward)
  std::string data_path;       // byte-level text
  double val_fraction = 0.1;
  std::string save_dir;    // checkpoints here (""; none)
  int save_every = 0;      // and every this many steps (0: only at the end)
  int keep_last = 0;       // keep only the newest this many checkpoints under save_dir (0: all)
  std::string resume_dir;  // load this checkpoint (a directory with `latest`, or one checkpoint) first
  int64_t stop_after = 0;  // stop after this many steps of this run (0: at `steps`); the schedule stays that of `steps`
  // Polled at the end of every optimizer step: a non-zero value (the signal number) stops the run
  // there with CANCELLED (every rank stops at the same step).
  std::function<int()> stop_requested;
};

// A peak learning rate that trains the model's width stably: min(3e-3, 0.6 / channels) — about
// GPT-3's choices (6e-4 at 768 channels, 3e-4 at 2048) and 3e-3 for the small test models. Lion
// (whose update has the size of lr in every element) gets a tenth of it, as its authors advise
// (3-10x smaller than AdamW's).
double default_lr(const GptShape& s, std::string_view optimizer = "AdamW");

struct TrainSummary {
  int64_t steps = 0;  // optimizer steps at the end
  double first_loss = 0, last_loss = 0, val_loss = 0;
  std::vector<double> losses;  // the training loss of every optimizer step of this run
  struct Step {                // and its time and traffic
    double seconds = 0, stall_seconds = 0;
    size_t h2d = 0, d2h = 0, nvme_read = 0, nvme_write = 0;
    size_t allreduce = 0, allgather = 0;  // collective buffers of this rank (EngineStats)
    double comm_seconds = 0;              // blocked in collectives
  };
  std::vector<Step> step_records;
  double seconds = 0, tokens_per_s = 0, tflops = 0;
  int64_t skipped = 0;  // accumulation cycles skipped on overflow (their batches are consumed)
  engine::EngineStats stats;
};

// The learning rate of optimizer step `step` (0-based).
double lr_at(const TrainOptions& o, int64_t step);

// Checks everything that can be checked before any work (shape, data, sizes) — errors are one
// line naming the problem — then trains. `print` receives progress lines.
StatusOr<TrainSummary> run_training(const engine::EngineConfig& cfg, const TrainOptions& o,
                                    const std::function<void(const std::string&)>& print,
                                    engine::EngineOptions eopts = {});

}  // namespace strata::train
