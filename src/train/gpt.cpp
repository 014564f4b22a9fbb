// GptModel: forward / backward of one micro-batch over a ParamSource, on the CPU compute path.
#include "src/train/gpt.h"

#include "src/train/gpt_cuda.h"

#include <cmath>
#include <cstring>
#include <map>

#include <tbb/blocked_range.h>

#include "kernels/cpu/parallel.h"

#include "kernels/cpu/casts.h"
#include "kernels/cpu/gpt_ops.h"
#include "kernels/cpu/isa.h"

namespace strata::train {
namespace {

namespace ops = kernels::gpt;

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The parts of one block, in registration order.
const char* const kBlockParts[12] = {"ln1.w", "ln1.b", "qkv.w", "qkv.b", "proj.w",   "proj.b",
                                     "ln2.w", "ln2.b", "fc.w",  "fc.b",  "fcproj.w", "fcproj.b"};
enum Part { kLn1W, kLn1B, kQkvW, kQkvB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFcprojW, kFcprojB };

std::string block_name(int l, int part) { return gpt_block_param(l, part); }

}  // namespace

std::string gpt_block_param(int l, int k) { return "h" + std::to_string(l) + "." + kBlockParts[k]; }

StatusOr<const void*> ParamSource::fetch_device(const std::string& name, void*) {
  return Status(StatusCode::kUnsupported, "this parameter source has no device memory (fetching '" + name + "')");
}
Status ParamSource::grad_device(const std::string& name, const void*, size_t, void*) {
  return Status(StatusCode::kUnsupported, "this parameter source has no device memory (gradient of '" + name + "')");
}

Status GptModel::check_tokens(const int32_t* inputs, const int32_t* targets) const {
  const int V = shape_.vocab;
  for (size_t i = 0; i < static_cast<size_t>(B_) * static_cast<size_t>(T_); ++i)
    if (inputs[i] < 0 || inputs[i] >= V || targets[i] < 0 || targets[i] >= V)
      return invalid_argument("token " + std::to_string(i) + " is outside the vocabulary of " + std::to_string(V));
  return Status::ok();
}

size_t ParamInfo::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

Status GptShape::validate() const {
  if (layers < 1 || heads < 1 || channels < 1 || vocab < 1 || max_seq < 1)
    return invalid_argument("model shape: layers, heads, channels, vocab and max_seq must be >= 1");
  if (channels % heads != 0)
    return invalid_argument("model shape: channels (" + std::to_string(channels) + ") must be a multiple of heads (" +
                            std::to_string(heads) + ")");
  return Status::ok();
}

size_t GptShape::num_params() const {
  size_t n = 0;
  for (const ParamInfo& p : gpt_params(*this)) n += p.numel();
  return n;
}

StatusOr<GptShape> gpt_preset(const std::string& name) {
  if (name == "tiny") return GptShape{2, 2, 64, 256, 64};
  if (name == "gpt2-124m") return GptShape{12, 12, 768, 256, 1024};
  if (name == "gpt2-350m") return GptShape{24, 16, 1024, 256, 1024};
  if (name == "gpt-1.3b") return GptShape{24, 32, 2048, 256, 1024};
  if (name == "gpt-7b") return GptShape{32, 32, 4096, 256, 1024};  // 6.4 G params (byte-level vocabulary)
  return invalid_argument("unknown model preset '" + name + "': choose tiny, gpt2-124m, gpt2-350m, gpt-1.3b or gpt-7b");
}

std::vector<ParamInfo> gpt_params(const GptShape& s) {
  const int64_t C = s.channels;
  std::vector<ParamInfo> p;
  p.push_back({"wte", {s.vocab, C}});
  p.push_back({"wpe", {s.max_seq, C}});
  for (int l = 0; l < s.layers; ++l) {
    const std::vector<int64_t> shapes[12] = {{C}, {C}, {3 * C, C}, {3 * C}, {C, C},     {C},
                                             {C}, {C}, {4 * C, C}, {4 * C}, {C, 4 * C}, {C}};
    for (int k = 0; k < 12; ++k) p.push_back({block_name(l, k), shapes[k]});
  }
  p.push_back({"lnf.w", {C}});
  p.push_back({"lnf.b", {C}});
  return p;
}

void gpt_init(const GptShape& s, const ParamInfo& p, uint64_t seed, float* out) {
  const size_t n = p.numel();
  const auto ends_with = [&](const char* suffix) {
    const size_t k = std::strlen(suffix);
    return p.name.size() >= k && p.name.compare(p.name.size() - k, k, suffix) == 0;
  };
  if (ends_with("ln1.w") || ends_with("ln2.w") || p.name == "lnf.w") {
    for (size_t i = 0; i < n; ++i) out[i] = 1.0f;
    return;
  }
  if (p.shape.size() == 1) {  // biases
    for (size_t i = 0; i < n; ++i) out[i] = 0.0f;
    return;
  }
  const double std = ends_with("proj.w") ? 0.02 / std::sqrt(2.0 * s.layers) : 0.02;
  uint64_t state = seed ^ 0xcbf29ce484222325ull;
  for (unsigned char ch : p.name) state = (state ^ ch) * 0x100000001b3ull;
  // splitmix is a counter: pair k draws from the states after 2k + 1 and 2k + 2 steps, so the
  // pairs fill in parallel with the values of the sequential loop.
  const size_t pairs = (n + 1) / 2;
  kernels::parallel_for(tbb::blocked_range<size_t>(0, pairs, 1 << 14), [&](const tbb::blocked_range<size_t>& r) {
    uint64_t st = state + 2 * r.begin() * 0x9e3779b97f4a7c15ull;
    for (size_t k = r.begin(); k < r.end(); ++k) {
      const double u1 = (static_cast<double>(splitmix(st) >> 11) + 1.0) * 0x1.0p-53;
      const double u2 = static_cast<double>(splitmix(st) >> 11) * 0x1.0p-53;
      const double rad = std::sqrt(-2.0 * std::log(u1)) * std;
      out[2 * k] = static_cast<float>(rad * std::cos(2.0 * M_PI * u2));
      if (2 * k + 1 < n) out[2 * k + 1] = static_cast<float>(rad * std::sin(2.0 * M_PI * u2));
    }
  });
}

namespace {

// Activations of one block (llm.c's names).
struct BlockActs {
  std::vector<float> ln1, ln1_mean, ln1_rstd, qkv, att, atty, attproj, res2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu,
      fcproj;
  BlockActs(int B, int T, int C, int NH) {
    const size_t N = static_cast<size_t>(B) * T;
    ln1.resize(N * C), ln1_mean.resize(N), ln1_rstd.resize(N), qkv.resize(N * 3 * C);
    att.resize(static_cast<size_t>(B) * NH * T * T), atty.resize(N * C), attproj.resize(N * C), res2.resize(N * C);
    ln2.resize(N * C), ln2_mean.resize(N), ln2_rstd.resize(N), fch.resize(N * 4 * C), fch_gelu.resize(N * 4 * C);
    fcproj.resize(N * C);
  }
  size_t bytes() const {
    size_t n = 0;
    for (const auto* v : {&ln1, &ln1_mean, &ln1_rstd, &qkv, &att, &atty, &attproj, &res2, &ln2, &ln2_mean, &ln2_rstd,
                          &fch, &fch_gelu, &fcproj})
      n += v->size() * 4;
    return n;
  }
};

struct CpuImpl {
  GptShape s;
  int B = 0, T = 0, N = 0, C = 0, NH = 0, V = 0, L = 0;
  bool ckpt = false;
  const kernels::KernelTable* k = nullptr;
  std::vector<ParamInfo> infos;
  std::map<std::string, size_t> index;
  std::vector<std::vector<float>> xs;  // residual stream entering block l ([L + 1] of [N, C])
  std::vector<BlockActs> acts;         // L of them, or 1 with checkpointing
  std::vector<float> lnf, lnf_mean, lnf_rstd, logits, probs;
  std::vector<float> wte, wpe, lnf_w, lnf_b;  // fp32 copies for the micro-batch
  std::vector<float> blk[12];                 // the current block's params, fp32
  std::vector<float> dblk[12];                // and their gradients
  std::vector<float> dwte, dwpe, dlnf_w, dlnf_b;
  std::vector<float> dlogits, dx, dres2, dtmp, dln, dfch, dfch_gelu, datty, dqkv;

  // Every float this path holds (activation_bytes).
  size_t bytes() const {
    size_t n = 0;
    for (const auto& x : xs) n += x.size();
    for (const auto* v :
         {&lnf,    &lnf_mean, &lnf_rstd, &logits, &probs, &wte,  &wpe, &lnf_w, &lnf_b,     &dwte,  &dwpe,
          &dlnf_w, &dlnf_b,   &dlogits,  &dx,     &dres2, &dtmp, &dln, &dfch,  &dfch_gelu, &datty, &dqkv})
      n += v->size();
    for (int p = 0; p < 12; ++p) n += blk[p].size() + dblk[p].size();
    n *= 4;
    for (const auto& a : acts) n += a.bytes();
    return n;
  }

  // Fetches `name`, casts it to fp32 into dst, releases it.
  Status load(ParamSource& src, const std::string& name, std::vector<float>& dst) {
    const ParamInfo& p = infos[index.at(name)];
    dst.resize(p.numel());
    STRATA_ASSIGN_OR_RETURN(const void* v, src.fetch(name));
    kernels::cast_to_fp32(*k, kernels::TensorView{v, src.dtype(), p.numel()}, 1.0f, dst.data());
    return src.release(name);
  }
  // The CPU path computes from fp32 copies, so each part is fetched, cast and released in turn:
  // the block never needs more than one chunk on the device at a time.
  Status load_block(ParamSource& src, int l) {
    for (int part = 0; part < 12; ++part) STRATA_RETURN_IF_ERROR(load(src, block_name(l, part), blk[part]));
    return Status::ok();
  }

  Status block_forward(const float* x, BlockActs& a, float* out) {
    ops::layernorm_forward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, blk[kLn1W].data(), blk[kLn1B].data(),
                           N, C);
    STRATA_RETURN_IF_ERROR(
        ops::matmul_forward(a.qkv.data(), a.ln1.data(), blk[kQkvW].data(), blk[kQkvB].data(), N, C, 3 * C));
    ops::attention_forward(a.atty.data(), a.att.data(), a.qkv.data(), B, T, C, NH);
    STRATA_RETURN_IF_ERROR(
        ops::matmul_forward(a.attproj.data(), a.atty.data(), blk[kProjW].data(), blk[kProjB].data(), N, C, C));
    ops::residual_forward(a.res2.data(), x, a.attproj.data(), static_cast<size_t>(N) * C);
    ops::layernorm_forward(a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.res2.data(), blk[kLn2W].data(),
                           blk[kLn2B].data(), N, C);
    STRATA_RETURN_IF_ERROR(
        ops::matmul_forward(a.fch.data(), a.ln2.data(), blk[kFcW].data(), blk[kFcB].data(), N, C, 4 * C));
    ops::gelu_forward(a.fch_gelu.data(), a.fch.data(), static_cast<size_t>(N) * 4 * C);
    STRATA_RETURN_IF_ERROR(ops::matmul_forward(a.fcproj.data(), a.fch_gelu.data(), blk[kFcprojW].data(),
                                               blk[kFcprojB].data(), N, 4 * C, C));
    ops::residual_forward(out, a.res2.data(), a.fcproj.data(), static_cast<size_t>(N) * C);
    return Status::ok();
  }

  // dx [N, C] holds d(out) on entry and d(x) on return; dblk receives the block's gradients.
  Status block_backward(const float* x, const BlockActs& a) {
    const size_t NC = static_cast<size_t>(N) * C;
    for (auto& d : dblk) std::fill(d.begin(), d.end(), 0.0f);
    dres2.assign(dx.begin(), dx.end());
    STRATA_RETURN_IF_ERROR(ops::matmul_backward(dfch_gelu.data(), dblk[kFcprojW].data(), dblk[kFcprojB].data(),
                                                dx.data(), a.fch_gelu.data(), blk[kFcprojW].data(), N, 4 * C, C));
    ops::gelu_backward(dfch.data(), dfch_gelu.data(), a.fch.data(), NC * 4);
    STRATA_RETURN_IF_ERROR(ops::matmul_backward(dln.data(), dblk[kFcW].data(), dblk[kFcB].data(), dfch.data(),
                                                a.ln2.data(), blk[kFcW].data(), N, C, 4 * C));
    ops::layernorm_backward(dtmp.data(), dblk[kLn2W].data(), dblk[kLn2B].data(), dln.data(), a.res2.data(),
                            blk[kLn2W].data(), a.ln2_mean.data(), a.ln2_rstd.data(), N, C);
    for (size_t i = 0; i < NC; ++i) dres2[i] += dtmp[i];
    STRATA_RETURN_IF_ERROR(ops::matmul_backward(datty.data(), dblk[kProjW].data(), dblk[kProjB].data(), dres2.data(),
                                                a.atty.data(), blk[kProjW].data(), N, C, C));
    ops::attention_backward(dqkv.data(), datty.data(), a.qkv.data(), a.att.data(), B, T, C, NH);
    STRATA_RETURN_IF_ERROR(ops::matmul_backward(dln.data(), dblk[kQkvW].data(), dblk[kQkvB].data(), dqkv.data(),
                                                a.ln1.data(), blk[kQkvW].data(), N, C, 3 * C));
    ops::layernorm_backward(dtmp.data(), dblk[kLn1W].data(), dblk[kLn1B].data(), dln.data(), x, blk[kLn1W].data(),
                            a.ln1_mean.data(), a.ln1_rstd.data(), N, C);
    for (size_t i = 0; i < NC; ++i) dx[i] = dres2[i] + dtmp[i];
    return Status::ok();
  }

  StatusOr<double> forward(ParamSource& src, const int32_t* inputs, const int32_t* targets) {
    STRATA_RETURN_IF_ERROR(load(src, "wte", wte));
    STRATA_RETURN_IF_ERROR(load(src, "wpe", wpe));
    ops::encoder_forward(xs[0].data(), inputs, wte.data(), wpe.data(), B, T, C);
    for (int l = 0; l < L; ++l) {
      STRATA_RETURN_IF_ERROR(load_block(src, l));
      STRATA_RETURN_IF_ERROR(block_forward(xs[static_cast<size_t>(l)].data(), acts[ckpt ? 0 : static_cast<size_t>(l)],
                                           xs[static_cast<size_t>(l) + 1].data()));
    }
    STRATA_RETURN_IF_ERROR(load(src, "lnf.w", lnf_w));
    STRATA_RETURN_IF_ERROR(load(src, "lnf.b", lnf_b));
    ops::layernorm_forward(lnf.data(), lnf_mean.data(), lnf_rstd.data(), xs[static_cast<size_t>(L)].data(),
                           lnf_w.data(), lnf_b.data(), N, C);
    STRATA_RETURN_IF_ERROR(ops::matmul_forward(logits.data(), lnf.data(), wte.data(), nullptr, N, C, V));  // tied head
    return ops::crossentropy_forward(probs.data(), logits.data(), targets, N, V);
  }

  Status backward(ParamSource& src, const int32_t* inputs, const int32_t* targets, float loss_scale) {
    ops::crossentropy_backward(dlogits.data(), probs.data(), targets, loss_scale, N, V);
    dwte.assign(static_cast<size_t>(V) * C, 0.0f);
    dwpe.assign(static_cast<size_t>(s.max_seq) * C, 0.0f);
    dlnf_w.assign(static_cast<size_t>(C), 0.0f);
    dlnf_b.assign(static_cast<size_t>(C), 0.0f);
    STRATA_RETURN_IF_ERROR(
        ops::matmul_backward(dln.data(), dwte.data(), nullptr, dlogits.data(), lnf.data(), wte.data(), N, C, V));
    ops::layernorm_backward(dx.data(), dlnf_w.data(), dlnf_b.data(), dln.data(), xs[static_cast<size_t>(L)].data(),
                            lnf_w.data(), lnf_mean.data(), lnf_rstd.data(), N, C);
    STRATA_RETURN_IF_ERROR(src.grad("lnf.w", dlnf_w.data(), dlnf_w.size()));
    STRATA_RETURN_IF_ERROR(src.grad("lnf.b", dlnf_b.data(), dlnf_b.size()));
    for (int l = L - 1; l >= 0; --l) {
      STRATA_RETURN_IF_ERROR(load_block(src, l));
      BlockActs& a = acts[ckpt ? 0 : static_cast<size_t>(l)];
      if (ckpt) {                            // recompute the block from its saved input
        std::vector<float>& scratch = dtmp;  // its output is not needed again
        STRATA_RETURN_IF_ERROR(block_forward(xs[static_cast<size_t>(l)].data(), a, scratch.data()));
      }
      for (int part = 0; part < 12; ++part) dblk[part].resize(blk[part].size());
      STRATA_RETURN_IF_ERROR(block_backward(xs[static_cast<size_t>(l)].data(), a));
      for (int part = 0; part < 12; ++part)
        STRATA_RETURN_IF_ERROR(src.grad(block_name(l, part), dblk[part].data(), dblk[part].size()));
    }
    ops::encoder_backward(dwte.data(), dwpe.data(), dx.data(), inputs, B, T, C);
    STRATA_RETURN_IF_ERROR(src.grad("wte", dwte.data(), dwte.size()));
    return src.grad("wpe", dwpe.data(), dwpe.size());
  }
};

// The CPU path: CpuImpl's fp32 copies and activations in host memory.
class CpuModel final : public GptModel {
 public:
  CpuModel(const GptShape& s, int B, int T, std::unique_ptr<CpuImpl> m) : GptModel(s, B, T), m_(std::move(m)) {}
  StatusOr<double> train_micro(ParamSource& src, const int32_t* inputs, const int32_t* targets,
                               float loss_scale) override {
    STRATA_RETURN_IF_ERROR(check_tokens(inputs, targets));
    STRATA_ASSIGN_OR_RETURN(double loss, m_->forward(src, inputs, targets));
    STRATA_RETURN_IF_ERROR(m_->backward(src, inputs, targets, loss_scale));
    return loss;
  }
  StatusOr<double> eval_loss(ParamSource& src, const int32_t* inputs, const int32_t* targets) override {
    STRATA_RETURN_IF_ERROR(check_tokens(inputs, targets));
    return m_->forward(src, inputs, targets);
  }
  size_t activation_bytes() const override { return m_->bytes(); }

 private:
  std::unique_ptr<CpuImpl> m_;
};

}  // namespace

GptModel::~GptModel() = default;

StatusOr<std::unique_ptr<GptModel>> GptModel::create(const GptShape& s, int B, int T, bool checkpointing,
                                                     Compute compute) {
  STRATA_RETURN_IF_ERROR(s.validate());
  if (B < 1 || T < 1) return invalid_argument("batch size and sequence length must be >= 1");
  if (T > s.max_seq)
    return invalid_argument("sequence length " + std::to_string(T) + " exceeds the model's max_seq " +
                            std::to_string(s.max_seq));
  if (compute == Compute::kCuda) return make_cuda_gpt(s, B, T, checkpointing);
  auto m = std::make_unique<CpuImpl>();
  m->s = s;
  m->B = B, m->T = T, m->N = B * T, m->C = s.channels, m->NH = s.heads, m->V = s.vocab, m->L = s.layers;
  m->ckpt = checkpointing;
  STRATA_ASSIGN_OR_RETURN(m->k, kernels::kernel_table(kernels::best_isa()));
  m->infos = gpt_params(s);
  for (size_t i = 0; i < m->infos.size(); ++i) m->index[m->infos[i].name] = i;
  const size_t NC = static_cast<size_t>(m->N) * m->C;
  m->xs.assign(static_cast<size_t>(s.layers) + 1, std::vector<float>(NC));
  m->acts.assign(checkpointing ? 1 : static_cast<size_t>(s.layers), BlockActs(B, T, m->C, m->NH));
  m->lnf.resize(NC), m->lnf_mean.resize(static_cast<size_t>(m->N)), m->lnf_rstd.resize(static_cast<size_t>(m->N));
  m->logits.resize(static_cast<size_t>(m->N) * m->V), m->probs.resize(m->logits.size()),
      m->dlogits.resize(m->logits.size());
  for (auto* v : {&m->dx, &m->dres2, &m->dtmp, &m->dln, &m->datty}) v->resize(NC);
  m->dfch.resize(NC * 4), m->dfch_gelu.resize(NC * 4), m->dqkv.resize(NC * 3);
  return std::unique_ptr<GptModel>(new CpuModel(s, B, T, std::move(m)));
}

double gpt_flops(const GptShape& s, int B, int T) {
  const double N = static_cast<double>(B) * T, C = s.channels, L = s.layers;
  const double matmul_params = L * 12.0 * C * C + static_cast<double>(s.vocab) * C;  // qkv, proj, fc, fcproj; LM head
  const double attention = L * 2.0 * 2.0 * B * static_cast<double>(T) * T * C / 2;   // QK^T and AV, causal half
  return 3.0 * (2.0 * N * matmul_params + attention);                                // backward ~ 2x forward
}

double GptModel::flops_per_micro() const { return gpt_flops(shape_, B_, T_); }

size_t gpt_cpu_model_bytes(const GptShape& s, int B, int T, bool checkpointing) {
  // In long double: a shape that overflows size_t must come out as "too large", not wrap.
  const long double N = static_cast<long double>(B) * T, C = s.channels, V = s.vocab, L = s.layers;
  const long double NC = N * C;
  const long double block = 17 * NC + 4 * N + static_cast<long double>(B) * s.heads * T * T;  // BlockActs
  const long double acts = (checkpointing ? 1 : L) * block;
  const long double stream = (L + 1) * NC + NC + 2 * N + 3 * N * V + 16 * NC;  // xs, lnf, logits x3, backward scratch
  const long double params =
      2 * (V * C + static_cast<long double>(s.max_seq) * C + 2 * C + 12 * C * C + 13 * C);  // + grads
  const long double bytes = 4 * (acts + stream + params);
  return bytes >= static_cast<long double>(SIZE_MAX) ? SIZE_MAX : static_cast<size_t>(bytes);
}

}  // namespace strata::train
