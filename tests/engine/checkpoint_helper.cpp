// A separate process for the checkpoint tests (tests/engine/checkpoint_test.cpp):
//   checkpoint_helper resume CONFIG CKPT MICRO_BEGIN MICRO_END OUT
//     a fresh engine loads CKPT, trains micro-batches [MICRO_BEGIN, MICRO_END) and writes every
//     master (MLP order, raw fp32) to OUT
//   checkpoint_helper crash CONFIG ROOT BLOCK_AT
//     trains 2 optimizer steps, saves to ROOT, trains 2 more and saves again, printing each save
//     point ("point <n> <name>") as it passes; at point BLOCK_AT it stops and waits to be killed
//     (-1: never; it prints "saving" just before the second save)
// CONFIG is a file holding the engine's JSON config.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/engine/engine_harness.h"

namespace {

using strata::engine::harness::RunOptions;
using strata::testing::Mlp;
using strata::testing::MlpShape;

int fail(const std::string& what) {
  std::printf("error %s\n", what.c_str());
  std::fflush(stdout);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace strata::engine;
  using strata::Status;
  if (argc < 4) return fail("usage: checkpoint_helper resume|crash CONFIG ...");
  const std::string mode = argv[1];
  std::ifstream f(argv[2]);
  std::stringstream ss;
  ss << f.rdbuf();
  auto cfg = parse_engine_config(ss.str());
  if (!cfg.is_ok()) return fail(cfg.status().to_string());
  const Mlp mlp{MlpShape{}};
  RunOptions o;
  std::vector<std::string> log;
  o.log = &log;
  if (mode == "resume" && argc == 7) {
    auto e = harness::make_engine(cfg.value(), mlp, o);
    if (!e.is_ok()) return fail(e.status().to_string());
    if (Status s = e.value()->load(argv[3]); !s.is_ok()) return fail(s.to_string());
    o.engine = e.value().get();
    o.micro_begin = std::atoi(argv[4]);
    o.micro_end = std::atoi(argv[5]);
    const harness::EngineRun run = harness::train_engine(ss.str(), mlp, o);
    std::ofstream out(argv[6], std::ios::binary);
    for (const auto& l : mlp.layers())
      for (const std::string& n : {l.w, l.b}) {
        const auto& v = run.master.at(n);
        out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
      }
    std::printf("done\n");
    return out.good() ? 0 : fail("writing the masters");
  }
  if (mode == "crash" && argc == 5) {
    const int block_at = std::atoi(argv[4]);
    int point = 0;
    bool armed = false;  // only the second save reports its points
    o.checkpoint_hook = [&](const std::string& name) {
      if (!armed) return;
      std::printf("point %d %s\n", point, name.c_str());
      std::fflush(stdout);
      if (point++ == block_at) {
        for (;;) ::pause();  // killed here
      }
    };
    auto e = harness::make_engine(cfg.value(), mlp, o);
    if (!e.is_ok()) return fail(e.status().to_string());
    Engine& eng = *e.value();
    o.engine = &eng;
    o.micro_begin = 0;
    o.micro_end = 2 * harness::kAccum;
    (void)harness::train_engine(ss.str(), mlp, o);
    if (Status s = eng.save(argv[3]); !s.is_ok()) return fail(s.to_string());
    std::printf("saved first\n");
    o.micro_begin = o.micro_end;
    o.micro_end = 4 * harness::kAccum;
    (void)harness::train_engine(ss.str(), mlp, o);
    armed = true;
    std::printf("saving\n");
    std::fflush(stdout);
    if (Status s = eng.save(argv[3]); !s.is_ok()) return fail(s.to_string());
    std::printf("done\n");
    return 0;
  }
  return fail("bad arguments");
}
