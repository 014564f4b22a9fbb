// bench/cpu_optimizers: params/s and bytes/s of every CPU optimizer for 10^8 parameters, each
// beside its own limit measured in the same run: a streaming loop that moves exactly the arrays
// that optimizer reads and writes, with the same element types, trivial arithmetic, vectorised and
// threaded the same way (Adam: p, g, m, v in and p, m, v, copy out; Lion / Adagrad: p, g, state in
// and p, state, copy out). For Adam also (2) the same work unfused (unscale pass, Adam, cast pass)
// and (3) a plain scalar loop. One JSON object per line on stdout, a table on stderr.
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/cpu/adam.h"
#include "kernels/cpu/casts.h"
#include "kernels/reference/half.h"
#include "naive_adam.h"
#include "src/optim/optimizer.h"

namespace strata::bench {
namespace {

using kernels::AdamTensor;

struct Options {
  size_t params = 100'000'000;
  int reps = 5;
  int scalar_reps = 2;
  bool all_combos = true;
  kernels::Isa isa = kernels::best_isa();
  std::vector<std::string> optimizers = {"Adam", "Lion", "Adagrad"};
};

struct Combo {
  DType grad;
  int out;  // -1: no bit16 copy
};

struct Timing {
  double best_s, median_s;
};

struct Result {
  Timing adam, limit, unfused, scalar;
  bool has_scalar = false;
};

std::string out_name(int out) { return out < 0 ? "none" : std::string(dtype_name(static_cast<DType>(out))); }

size_t bytes_per_param(const Combo& c) {
  return 12 /* read p, m, v */ + dtype_size(c.grad) + 12 /* write p, m, v */ + (c.out < 0 ? 0 : 2);
}

// Buffers for one combination, first touched by the arena's threads.
struct State {
  Buffer p, m, v, g, g32, out;
  AdamTensor t;
};

// body(i) for every i in [0, n), over the arena's threads (first touch where the kernels run).
template <typename Body>
void for_each_element(tbb::task_arena& arena, size_t n, const Body& body) {
  arena.execute([&] {
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1 << 16), [&](const tbb::blocked_range<size_t>& r) {
      for (size_t i = r.begin(); i != r.end(); ++i) body(i);
    });
  });
}

// Gradient element i in its dtype; positive, so that v stays > 0 however many passes the limit
// loop adds them.
void put_grad(unsigned char* g, DType dt, size_t i) {
  const float gv = 0.001f + static_cast<float>(i % 97) * 1e-4f;
  if (dt == DType::kF32) {
    std::memcpy(g + 4 * i, &gv, 4);
    return;
  }
  const uint16_t h = dt == DType::kBF16 ? reference::float_to_bf16(gv) : reference::float_to_fp16(gv);
  std::memcpy(g + 2 * i, &h, 2);
}

State make_state(const Combo& c, size_t n, tbb::task_arena& arena) {
  State s{alloc_buffer(n * 4),
          alloc_buffer(n * 4),
          alloc_buffer(n * 4),
          alloc_buffer(n * dtype_size(c.grad)),
          alloc_buffer(n * 4),
          alloc_buffer(n * 2),
          {}};
  float* p = reinterpret_cast<float*>(s.p.get());
  float* m = reinterpret_cast<float*>(s.m.get());
  float* v = reinterpret_cast<float*>(s.v.get());
  float* g32 = reinterpret_cast<float*>(s.g32.get());
  unsigned char* g = s.g.get();
  uint16_t* out = reinterpret_cast<uint16_t*>(s.out.get());
  for_each_element(arena, n, [&](size_t i) {
    p[i] = 0.1f;
    m[i] = 0.0f;
    v[i] = 0.0f;
    g32[i] = 0.0f;
    out[i] = 0;
    put_grad(g, c.grad, i);
  });
  s.t = AdamTensor{p, m, v, g, c.grad, c.out < 0 ? nullptr : out, c.out < 0 ? DType::kBF16 : static_cast<DType>(c.out),
                   n};
  return s;
}

Result run(const kernels::KernelTable& k, const Combo& c, int threads, const Options& o, bool with_scalar) {
  tbb::task_arena arena(threads);
  State s = make_state(c, o.params, arena);
  kernels::AdamHyper h;
  h.weight_decay = 0.01f;
  h.grad_scale = 0.5f;
  const kernels::AdamCoeffs coeffs = kernels::make_adam_coeffs(kernels::AdamMode::kAdamW, true, 1, h);
  kernels::AdamCoeffs unit = coeffs;
  unit.grad_scale = 1.0f;
  const std::span<const AdamTensor> one(&s.t, 1);
  AdamTensor plain = s.t;  // the unfused middle pass: fp32 grads, no copy
  plain.grads = s.g32.get();
  plain.grad_dtype = DType::kF32;
  plain.params_out = nullptr;

  auto fused = [&] { arena.execute([&] { kernels::adam_update(k, coeffs, one); }); };
  auto limit = [&] { arena.execute([&] { kernels::stream_mix(k, one); }); };
  auto unfused = [&] {
    arena.execute([&] {
      kernels::cast_to_fp32(k, kernels::TensorView{s.t.grads, c.grad, o.params}, h.grad_scale,
                            reinterpret_cast<float*>(s.g32.get()));
      kernels::adam_update(k, unit, std::span<const AdamTensor>(&plain, 1));
      if (c.out >= 0) kernels::cast_from_fp32(k, s.t.params, o.params, static_cast<DType>(c.out), s.t.params_out);
    });
  };
  fused();  // warm up every path once (page tables, code, caches)
  limit();
  unfused();
  std::vector<double> ta, tl, tu, ts;
  for (int r = 0; r < o.reps; ++r) {  // interleaved, so drifts of a noisy VM hit all alike
    ta.push_back(seconds(fused));
    tl.push_back(seconds(limit));
    tu.push_back(seconds(unfused));
  }
  Result res{{best(ta), median(ta)}, {best(tl), median(tl)}, {best(tu), median(tu)}, {}, false};
  if (with_scalar) {
    for (int r = 0; r < o.scalar_reps; ++r) ts.push_back(seconds([&] { naive_adam(coeffs, s.t); }));
    res.scalar = {best(ts), median(ts)};
    res.has_scalar = true;
  }
  return res;
}

std::string timing_json(const Timing& t, size_t n, size_t bpp) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "{\"params_per_s\": %.4g, \"gb_per_s\": %.4g, \"best_s\": %.5f, \"median_s\": %.5f}",
                static_cast<double>(n) / t.best_s, static_cast<double>(n * bpp) / t.best_s / 1e9, t.best_s, t.median_s);
  return buf;
}

void report(const Combo& c, int threads, const Options& o, const Result& r, const kernels::KernelTable& k) {
  const size_t bpp = bytes_per_param(c);
  const double ratio = r.limit.best_s / r.adam.best_s;
  std::string j = "{\"bench\": \"cpu_adam\", \"git_sha\": \"" STRATA_GIT_SHA "\", ";
  j += "\"where\": " + where_json(k.name) + ", ";
  j += "\"params\": " + std::to_string(o.params) + ", \"grad\": \"" + std::string(dtype_name(c.grad)) +
       "\", \"out\": \"" + out_name(c.out) + "\", \"threads\": " + std::to_string(threads) +
       ", \"bytes_per_param\": " + std::to_string(bpp) + ", \"reps\": " + std::to_string(o.reps) + ", ";
  j += "\"adam\": " + timing_json(r.adam, o.params, bpp) + ", ";
  j += "\"limit_same_mix\": " + timing_json(r.limit, o.params, bpp) + ", ";
  char buf[160];
  std::snprintf(buf, sizeof(buf), "\"ratio_to_limit\": %.3f, ", ratio);
  j += buf;
  j += "\"unfused\": " + timing_json(r.unfused, o.params, bpp) + ", ";
  std::snprintf(buf, sizeof(buf), "\"fused_speedup\": %.2f", r.unfused.best_s / r.adam.best_s);
  j += buf;
  if (r.has_scalar) {
    j += ", \"scalar_loop\": " + timing_json(r.scalar, o.params, bpp);
    std::snprintf(buf, sizeof(buf), ", \"speedup_vs_scalar\": %.2f", r.scalar.best_s / r.adam.best_s);
    j += buf;
  }
  j += "}";
  std::printf("%s\n", j.c_str());
  std::fflush(stdout);
  std::fprintf(
      stderr, "%-5s %-5s %3d thr | adam %6.3f Gp/s %6.2f GB/s | limit %6.3f Gp/s | ratio %5.3f | unfused x%.2f",
      std::string(dtype_name(c.grad)).c_str(), out_name(c.out).c_str(), threads, o.params / r.adam.best_s / 1e9,
      o.params * bpp / r.adam.best_s / 1e9, o.params / r.limit.best_s / 1e9, ratio, r.unfused.best_s / r.adam.best_s);
  if (r.has_scalar) std::fprintf(stderr, " | scalar loop x%.1f", r.scalar.best_s / r.adam.best_s);
  std::fprintf(stderr, "\n");
}

// --- the one-state optimizers (Lion, Adagrad) through their plug-ins -----------------------

size_t one_state_bytes(const Combo& c) {
  return 8 /* read p, s */ + dtype_size(c.grad) + 8 /* write p, s */ + (c.out < 0 ? 0 : 2);
}

struct OneState {
  Buffer p, s, g, out;
  optim::Tensor t;
};

OneState make_one_state(const Combo& c, size_t n, tbb::task_arena& arena) {
  OneState s{alloc_buffer(n * 4), alloc_buffer(n * 4), alloc_buffer(n * dtype_size(c.grad)), alloc_buffer(n * 2), {}};
  float* p = reinterpret_cast<float*>(s.p.get());
  float* st = reinterpret_cast<float*>(s.s.get());
  unsigned char* g = s.g.get();
  uint16_t* out = reinterpret_cast<uint16_t*>(s.out.get());
  for_each_element(arena, n, [&](size_t i) {
    p[i] = 0.1f;
    st[i] = 0.0f;
    out[i] = 0;
    put_grad(g, c.grad, i);
  });
  s.t.array[0] = p;
  s.t.array[1] = st;
  s.t.grads = g;
  s.t.grad_dtype = c.grad;
  s.t.params_out = c.out < 0 ? nullptr : out;
  s.t.out_dtype = c.out < 0 ? DType::kBF16 : static_cast<DType>(c.out);
  s.t.count = n;
  return s;
}

void run_one_state(const optim::Optimizer& opt, const kernels::KernelTable& k, const Combo& c, int threads,
                   const Options& o) {
  tbb::task_arena arena(threads);
  OneState s = make_one_state(c, o.params, arena);
  const optim::StepCoeffs coeffs = opt.coeffs(1, opt.hyper().lr, 0.5f).value();
  const std::span<const optim::Tensor> one(&s.t, 1);
  auto fused = [&] { arena.execute([&] { (void)opt.update_host(k, coeffs, one); }); };
  auto limit = [&] { arena.execute([&] { opt.stream_limit(k, one); }); };
  fused();
  limit();
  std::vector<double> tu, tl;
  for (int r = 0; r < o.reps; ++r) {
    tu.push_back(seconds(fused));
    tl.push_back(seconds(limit));
  }
  const Timing u{best(tu), median(tu)}, l{best(tl), median(tl)};
  const size_t bpp = one_state_bytes(c);
  const double ratio = l.best_s / u.best_s;
  std::string j = "{\"bench\": \"cpu_optimizer\", \"optimizer\": \"" + std::string(opt.type()) +
                  "\", \"git_sha\": \"" STRATA_GIT_SHA "\", ";
  j += "\"where\": " + where_json(k.name) + ", ";
  j += "\"params\": " + std::to_string(o.params) + ", \"grad\": \"" + std::string(dtype_name(c.grad)) +
       "\", \"out\": \"" + out_name(c.out) + "\", \"threads\": " + std::to_string(threads) +
       ", \"bytes_per_param\": " + std::to_string(bpp) + ", \"reps\": " + std::to_string(o.reps) + ", ";
  j += "\"update\": " + timing_json(u, o.params, bpp) + ", \"limit_same_mix\": " + timing_json(l, o.params, bpp);
  char buf[64];
  std::snprintf(buf, sizeof(buf), ", \"ratio_to_limit\": %.3f}", ratio);
  std::printf("%s%s\n", j.c_str(), buf);
  std::fflush(stdout);
  std::fprintf(stderr, "%-7s %-5s %-5s %3d thr | update %6.3f Gp/s %6.2f GB/s | limit %6.3f Gp/s | ratio %5.3f\n",
               std::string(opt.type()).c_str(), std::string(dtype_name(c.grad)).c_str(), out_name(c.out).c_str(),
               threads, o.params / u.best_s / 1e9, o.params * bpp / u.best_s / 1e9, o.params / l.best_s / 1e9, ratio);
}

int usage(const char* argv0, const std::string& why) {
  std::fprintf(stderr,
               "%s\nusage: %s [--params N] [--reps R] [--scalar-reps R] [--combos all|main] "
               "[--isa scalar|avx2|avx512|best] [--optimizers Adam,Lion,Adagrad]\n",
               why.c_str(), argv0);
  return 2;
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  using namespace strata;
  using namespace strata::bench;
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0], "missing value after " + a);
    const std::string v = argv[++i];
    char* end = nullptr;
    if (a == "--params") {
      o.params = std::strtoull(v.c_str(), &end, 10);
      if (*end != '\0' || o.params == 0) return usage(argv[0], "--params wants a positive integer, not '" + v + "'");
    } else if (a == "--reps" || a == "--scalar-reps") {
      const long r = std::strtol(v.c_str(), &end, 10);
      if (*end != '\0' || r < (a == "--reps" ? 1 : 0) || r > 1000)
        return usage(argv[0], a + " out of range: '" + v + "'");
      (a == "--reps" ? o.reps : o.scalar_reps) = static_cast<int>(r);
    } else if (a == "--combos") {
      if (v != "all" && v != "main") return usage(argv[0], "--combos is all or main, not '" + v + "'");
      o.all_combos = v == "all";
    } else if (a == "--optimizers") {
      o.optimizers.clear();
      for (size_t at = 0; at <= v.size();) {
        const size_t comma = std::min(v.find(',', at), v.size());
        auto r = optim::find(v.substr(at, comma - at));
        if (!r.is_ok()) return usage(argv[0], "--optimizers: " + r.status().message());
        o.optimizers.push_back(r.value()->type);
        at = comma + 1;
      }
    } else if (a == "--isa") {
      auto isa = kernels::parse_isa(v);
      if (!isa.is_ok()) return usage(argv[0], isa.status().message());
      o.isa = isa.value();
    } else {
      return usage(argv[0], "unknown option " + a);
    }
  }
  auto table = kernels::kernel_table(o.isa);
  if (!table.is_ok()) {
    std::fprintf(stderr, "%s\n", table.status().to_string().c_str());
    return 1;
  }
  const kernels::KernelTable& k = *table.value();
  const int all = tbb::info::default_concurrency();
  const std::vector<Combo> main_combos = {{DType::kF32, -1}, {DType::kBF16, static_cast<int>(DType::kBF16)}};
  std::vector<Combo> combos = main_combos;
  if (o.all_combos) {
    combos.clear();
    for (DType g : {DType::kF32, DType::kBF16, DType::kF16})
      for (int out : {-1, static_cast<int>(DType::kBF16), static_cast<int>(DType::kF16)}) combos.push_back({g, out});
  }
  std::fprintf(stderr, "cpu_optimizers: %zu params, %s kernels, %d threads max, %d reps (best of), CPU %s\n", o.params,
               k.name, all, o.reps, cpu_model().c_str());
  for (const std::string& type : o.optimizers) {
    if (type == "Adam" || type == "AdamW") {
      if (all > 1)
        for (const Combo& c : main_combos) report(c, 1, o, run(k, c, 1, o, false), k);
      for (const Combo& c : combos) report(c, all, o, run(k, c, all, o, o.scalar_reps > 0), k);
      continue;
    }
    auto opt = optim::make(type, optim::find(type).value()->defaults);
    if (!opt.is_ok()) {
      std::fprintf(stderr, "%s\n", opt.status().to_string().c_str());
      return 1;
    }
    if (all > 1)
      for (const Combo& c : main_combos) run_one_state(*opt.value(), k, c, 1, o);
    for (const Combo& c : combos) run_one_state(*opt.value(), k, c, all, o);
  }
  return 0;
}
