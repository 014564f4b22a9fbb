// GptModel's CUDA compute path. Matmuls through cuBLAS with bf16 operands and fp32 accumulation
// (the params come as bf16 from the source; the activations that feed a matmul are kept as bf16),
// attention's batched products in fp32 with TF32 tensor cores, everything else in
// kernels/cuda/gpt_kernels.h on fp32 activations. One stream carries all the work; the source's
// fetches and gradient hand-overs are ordered on it, so nothing waits on the host except the loss.
// Every kernel and cuBLAS call here is deterministic: the same inputs give the same bits.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "kernels/cuda/gpt_kernels.h"
#include "src/common/cuda_check.h"
#include "src/train/gpt_cuda.h"

namespace strata::train {
namespace {

namespace k = kernels::gpt_cuda;

Status cublas_status(cublasStatus_t st, const char* call) {
  return Status(StatusCode::kCuda,
                std::string(call) + " failed: " + cublasGetStatusName(st) + ": " + cublasGetStatusString(st));
}
#define CUBLAS_CHECK(call)                                              \
  do {                                                                  \
    const cublasStatus_t st_ = (call);                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS) return cublas_status(st_, #call); \
  } while (0)

// One device allocation; freed with the model.
class DevBuf {
 public:
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  ~DevBuf() {
    if (p_ != nullptr) cudaFree(p_);
  }
  Status alloc(size_t bytes, const char* what) {
    bytes_ = bytes;
    const cudaError_t err = cudaMalloc(&p_, std::max<size_t>(bytes, 1));
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      p_ = nullptr;
      return Status(StatusCode::kOutOfMemory, std::string("the GPT model's CUDA activations: cannot allocate ") +
                                                  std::to_string(bytes) + " bytes for " + what + " (" +
                                                  cudaGetErrorString(err) +
                                                  "); lower the batch or sequence length, or "
                                                  "turn on activation checkpointing");
    }
    return Status::ok();
  }
  float* f() const { return static_cast<float*>(p_); }
  uint16_t* h() const { return static_cast<uint16_t*>(p_); }
  int32_t* i() const { return static_cast<int32_t*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

enum Part { kLn1W, kLn1B, kQkvW, kQkvB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFcprojW, kFcprojB };

// Activations of one block kept for backward (bf16 where they feed a matmul).
struct Acts {
  DevBuf ln1, ln1_mean, ln1_rstd, qkv, att, atty, res2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu;
};

class CudaModel final : public GptModel {
 public:
  CudaModel(const GptShape& s, int B, int T, bool ckpt)
      : GptModel(s, B, T), N_(B * T), C_(s.channels), NH_(s.heads), V_(s.vocab), L_(s.layers), ckpt_(ckpt) {}

  ~CudaModel() override {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    if (blas_ != nullptr) cublasDestroy(blas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (host_losses_ != nullptr) cudaFreeHost(host_losses_);
  }

  Status init() {
    STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&blas_));
    CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    STRATA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_losses_), sizeof(float) * static_cast<size_t>(N_)));
    const size_t N = static_cast<size_t>(N_), C = static_cast<size_t>(C_), NC = N * C, V = static_cast<size_t>(V_);
    const size_t TT = static_cast<size_t>(B_) * NH_ * T_ * static_cast<size_t>(T_);
    const size_t F = 4, H = 2;  // bytes of fp32, bf16
    STRATA_RETURN_IF_ERROR(tok_in_.alloc(N * 4, "tokens"));
    STRATA_RETURN_IF_ERROR(tok_tgt_.alloc(N * 4, "targets"));
    STRATA_RETURN_IF_ERROR(tok_offsets_.alloc((V + 1) * 4, "token offsets"));
    STRATA_RETURN_IF_ERROR(tok_pos_.alloc(N * 4, "token positions"));
    xs_.resize(static_cast<size_t>(L_) + 1);
    for (auto& x : xs_) STRATA_RETURN_IF_ERROR(x.alloc(NC * F, "the residual stream"));
    acts_.resize(ckpt_ ? 1 : static_cast<size_t>(L_));
    for (Acts& a : acts_) {
      const std::array<std::pair<DevBuf*, size_t>, 12> bufs = {{{&a.ln1, NC * H},
                                                                {&a.ln1_mean, N * F},
                                                                {&a.ln1_rstd, N * F},
                                                                {&a.qkv, 3 * NC * F},
                                                                {&a.att, TT * F},
                                                                {&a.atty, NC * H},
                                                                {&a.res2, NC * F},
                                                                {&a.ln2, NC * H},
                                                                {&a.ln2_mean, N * F},
                                                                {&a.ln2_rstd, N * F},
                                                                {&a.fch, 4 * NC * F},
                                                                {&a.fch_gelu, 4 * NC * H}}};
      for (const auto& [buf, bytes] : bufs) STRATA_RETURN_IF_ERROR(buf->alloc(bytes, "block activations"));
    }
    const std::array<std::pair<DevBuf*, size_t>, 25> scratch = {
        {{&q_, NC * F},          {&kk_, NC * F},
         {&v_, NC * F},          {&y_, NC * F},
         {&tt_, TT * F},         {&tmp_, NC * F},
         {&lnf_, NC * H},        {&lnf_mean_, N * F},
         {&lnf_rstd_, N * F},    {&logits_, N * V * F},
         {&probs_, N * V * F},   {&losses_, N * F},
         {&dlogits_, N * V * F}, {&dout_bf_, N * std::max(4 * C, V) * H},
         {&dx_, NC * F},         {&dres2_, NC * F},
         {&dln_, NC * F},        {&dfch_, 4 * NC * F},
         {&datty_, NC * F},      {&dqkv_, 3 * NC * F},
         {&dq_, NC * F},         {&dk_, NC * F},
         {&dv_, NC * F},         {&dy_, NC * F},
         {&ones_, N * F}}};
    for (const auto& [buf, bytes] : scratch) STRATA_RETURN_IF_ERROR(buf->alloc(bytes, "scratch"));
    const std::vector<float> ones(N, 1.0f);
    STRATA_CUDA_CHECK(cudaMemcpy(ones_.f(), ones.data(), N * F, cudaMemcpyHostToDevice));
    const size_t part_numel[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
    for (int p = 0; p < kGptBlockParts; ++p) {
      numel_[p] = part_numel[p];
      STRATA_RETURN_IF_ERROR(dblk_[p].alloc(part_numel[p] * F, "block gradients"));
      STRATA_RETURN_IF_ERROR(gblk_[p].alloc(part_numel[p] * H, "block gradients (bf16)"));
    }
    const size_t Ts = static_cast<size_t>(shape_.max_seq);
    STRATA_RETURN_IF_ERROR(dwte_.alloc(V * C * F, "wte gradient"));
    STRATA_RETURN_IF_ERROR(dwpe_.alloc(Ts * C * F, "wpe gradient"));
    STRATA_RETURN_IF_ERROR(dlnf_w_.alloc(C * F, "lnf gradient"));
    STRATA_RETURN_IF_ERROR(dlnf_b_.alloc(C * F, "lnf gradient"));
    STRATA_RETURN_IF_ERROR(gbits_.alloc(std::max(V, Ts) * C * H, "embedding gradient (bf16)"));
    return Status::ok();
  }

  StatusOr<double> train_micro(ParamSource& src, const int32_t* inputs, const int32_t* targets,
                               float loss_scale) override {
    STRATA_ASSIGN_OR_RETURN(double loss, forward(src, inputs, targets, true));
    STRATA_RETURN_IF_ERROR(backward(src, inputs, loss_scale));
    return loss;
  }
  StatusOr<double> eval_loss(ParamSource& src, const int32_t* inputs, const int32_t* targets) override {
    return forward(src, inputs, targets, false);
  }
  size_t activation_bytes() const override {
    size_t n = 0;
    for (const auto& x : xs_) n += x.bytes();
    for (const Acts& a : acts_)
      for (const DevBuf* b : {&a.ln1, &a.ln1_mean, &a.ln1_rstd, &a.qkv, &a.att, &a.atty, &a.res2, &a.ln2, &a.ln2_mean,
                              &a.ln2_rstd, &a.fch, &a.fch_gelu})
        n += b->bytes();
    return n + lnf_.bytes() + logits_.bytes() + probs_.bytes() + dlogits_.bytes();
  }

 private:
  // --- params -------------------------------------------------------------------------------
  StatusOr<const uint16_t*> fetch(ParamSource& src, const std::string& name) {
    STRATA_ASSIGN_OR_RETURN(const void* p, src.fetch_device(name, stream_));
    return static_cast<const uint16_t*>(p);
  }
  // Block l's params are fetched op by op and released as soon as the op is queued, so the
  // source needs no more live memory than the largest param (the engine's refill of a released
  // buffer waits for the work queued here).
  Status get(ParamSource& src, int l, std::initializer_list<int> parts) {
    for (int p : parts) {
      STRATA_ASSIGN_OR_RETURN(blk_[p], fetch(src, gpt_block_param(l, p)));
    }
    return Status::ok();
  }
  Status put(ParamSource& src, int l, std::initializer_list<int> parts) {
    for (int p : parts) STRATA_RETURN_IF_ERROR(src.release(gpt_block_param(l, p)));
    return Status::ok();
  }
  // Hands over block l's gradients of `parts` (complete in dblk_).
  Status give(ParamSource& src, int l, std::initializer_list<int> parts) {
    for (int p : parts)
      STRATA_RETURN_IF_ERROR(hand_over(src, gpt_block_param(l, p), dblk_[p].f(), gblk_[p].h(), numel_[p]));
    return Status::ok();
  }
  // Rounds the fp32 gradient to bf16 in `bits` and hands it over.
  Status hand_over(ParamSource& src, const std::string& name, const float* g, uint16_t* bits, size_t n) {
    STRATA_RETURN_IF_ERROR(k::to_bf16(bits, g, n, stream_));
    return src.grad_device(name, bits, n, stream_);
  }

  // --- matmuls ------------------------------------------------------------------------------
  // out[N, OC] (fp32) = x[N, C] @ w[OC, C]^T + bias; x and w bf16.
  Status mm_forward(float* out, const uint16_t* x, const uint16_t* w, const uint16_t* bias, int N, int C, int OC) {
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, w, CUDA_R_16BF, C, x, CUDA_R_16BF, C,
                              &zero, out, CUDA_R_32F, OC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias != nullptr) return k::add_bias(out, bias, N, OC, stream_);
    return Status::ok();
  }
  // dx = dout @ w (overwritten, when dx is not null); dw += dout^T @ x; dbias += column sums of dout.
  Status mm_backward(float* dx, float* dw, float* dbias, const float* dout, const uint16_t* x, const uint16_t* w, int N,
                     int C, int OC) {
    const float one = 1.0f, zero = 0.0f;
    uint16_t* dout_bf = dout_bf_.h();
    STRATA_RETURN_IF_ERROR(k::to_bf16(dout_bf, dout, static_cast<size_t>(N) * OC, stream_));
    if (dx != nullptr)
      CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, w, CUDA_R_16BF, C, dout_bf,
                                CUDA_R_16BF, OC, &zero, dx, CUDA_R_32F, C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, x, CUDA_R_16BF, C, dout_bf, CUDA_R_16BF,
                              OC, &one, dw, CUDA_R_32F, C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (dbias != nullptr) return colsum(dbias, dout, N, OC);
    return Status::ok();
  }
  // sums[c] += sum over rows of m[N, C] (fp32), as a product with a vector of ones.
  Status colsum(float* sums, const float* m, int N, int C) {
    const float one = 1.0f;
    CUBLAS_CHECK(cublasSgemv(blas_, CUBLAS_OP_N, C, N, &one, m, C, ones_.f(), 1, &one, sums, 1));
    return Status::ok();
  }
  // Batched products over the B * NH heads, fp32 storage with TF32 tensor cores.
  Status bmm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int kd, const float* a, int lda, long long sa,
             const float* b, int ldb, long long sb, float* c, int ldc, long long sc) {
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas_, ta, tb, m, n, kd, &one, a, CUDA_R_32F, lda, sa, b, CUDA_R_32F, ldb,
                                            sb, &zero, c, CUDA_R_32F, ldc, sc, B_ * NH_, CUBLAS_COMPUTE_32F_FAST_TF32,
                                            CUBLAS_GEMM_DEFAULT));
    return Status::ok();
  }

  // --- attention ----------------------------------------------------------------------------
  Status attention_forward(Acts& a) {
    const int T = T_, hs = C_ / NH_;
    const long long Ths = static_cast<long long>(T) * hs, TT = static_cast<long long>(T) * T;
    STRATA_RETURN_IF_ERROR(k::attention_permute(q_.f(), kk_.f(), v_.f(), a.qkv.f(), B_, T, C_, NH_, stream_));
    STRATA_RETURN_IF_ERROR(bmm(CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, kk_.f(), hs, Ths, q_.f(), hs, Ths, tt_.f(), T, TT));
    STRATA_RETURN_IF_ERROR(
        k::attention_softmax(a.att.f(), tt_.f(), 1.0f / std::sqrt(static_cast<float>(hs)), B_ * NH_ * T, T, stream_));
    STRATA_RETURN_IF_ERROR(bmm(CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, v_.f(), hs, Ths, a.att.f(), T, TT, y_.f(), hs, Ths));
    return k::attention_unpermute(a.atty.h(), y_.f(), B_, T, C_, NH_, stream_);
  }
  // datty_ -> dqkv_.
  Status attention_backward(const Acts& a) {
    const int T = T_, hs = C_ / NH_;
    const long long Ths = static_cast<long long>(T) * hs, TT = static_cast<long long>(T) * T;
    STRATA_RETURN_IF_ERROR(k::attention_permute(q_.f(), kk_.f(), v_.f(), a.qkv.f(), B_, T, C_, NH_, stream_));
    STRATA_RETURN_IF_ERROR(k::attention_unpermute_backward(dy_.f(), datty_.f(), B_, T, C_, NH_, stream_));
    float* datt = tt_.f();
    STRATA_RETURN_IF_ERROR(bmm(CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, v_.f(), hs, Ths, dy_.f(), hs, Ths, datt, T, TT));
    STRATA_RETURN_IF_ERROR(
        bmm(CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, dy_.f(), hs, Ths, a.att.f(), T, TT, dv_.f(), hs, Ths));
    STRATA_RETURN_IF_ERROR(k::attention_softmax_backward(
        datt, datt, a.att.f(), 1.0f / std::sqrt(static_cast<float>(hs)), B_ * NH_ * T, T, stream_));
    STRATA_RETURN_IF_ERROR(bmm(CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, kk_.f(), hs, Ths, datt, T, TT, dq_.f(), hs, Ths));
    STRATA_RETURN_IF_ERROR(bmm(CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, q_.f(), hs, Ths, datt, T, TT, dk_.f(), hs, Ths));
    return k::attention_permute_backward(dqkv_.f(), dq_.f(), dk_.f(), dv_.f(), B_, T, C_, NH_, stream_);
  }

  // --- one block ----------------------------------------------------------------------------
  Status block_forward(ParamSource& src, int l, const float* x, Acts& a, float* out) {
    const int N = N_, C = C_;
    const size_t NC = static_cast<size_t>(N) * C;
    STRATA_RETURN_IF_ERROR(get(src, l, {kLn1W, kLn1B}));
    STRATA_RETURN_IF_ERROR(
        k::layernorm_forward(a.ln1.h(), a.ln1_mean.f(), a.ln1_rstd.f(), x, blk_[kLn1W], blk_[kLn1B], N, C, stream_));
    STRATA_RETURN_IF_ERROR(put(src, l, {kLn1W, kLn1B}));
    STRATA_RETURN_IF_ERROR(get(src, l, {kQkvW, kQkvB}));
    STRATA_RETURN_IF_ERROR(mm_forward(a.qkv.f(), a.ln1.h(), blk_[kQkvW], blk_[kQkvB], N, C, 3 * C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kQkvW, kQkvB}));
    STRATA_RETURN_IF_ERROR(attention_forward(a));
    STRATA_RETURN_IF_ERROR(get(src, l, {kProjW, kProjB}));
    STRATA_RETURN_IF_ERROR(mm_forward(tmp_.f(), a.atty.h(), blk_[kProjW], blk_[kProjB], N, C, C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kProjW, kProjB}));
    STRATA_RETURN_IF_ERROR(k::residual_forward(a.res2.f(), x, tmp_.f(), NC, stream_));
    STRATA_RETURN_IF_ERROR(get(src, l, {kLn2W, kLn2B}));
    STRATA_RETURN_IF_ERROR(k::layernorm_forward(a.ln2.h(), a.ln2_mean.f(), a.ln2_rstd.f(), a.res2.f(), blk_[kLn2W],
                                                blk_[kLn2B], N, C, stream_));
    STRATA_RETURN_IF_ERROR(put(src, l, {kLn2W, kLn2B}));
    STRATA_RETURN_IF_ERROR(get(src, l, {kFcW, kFcB}));
    STRATA_RETURN_IF_ERROR(mm_forward(a.fch.f(), a.ln2.h(), blk_[kFcW], blk_[kFcB], N, C, 4 * C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kFcW, kFcB}));
    STRATA_RETURN_IF_ERROR(k::gelu_forward(a.fch_gelu.h(), a.fch.f(), 4 * NC, stream_));
    STRATA_RETURN_IF_ERROR(get(src, l, {kFcprojW, kFcprojB}));
    STRATA_RETURN_IF_ERROR(mm_forward(tmp_.f(), a.fch_gelu.h(), blk_[kFcprojW], blk_[kFcprojB], N, 4 * C, C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kFcprojW, kFcprojB}));
    return k::residual_forward(out, a.res2.f(), tmp_.f(), NC, stream_);
  }

  // dx_ holds d(out) on entry and d(x) on return; each of the block's gradients is handed over as
  // soon as it is complete.
  Status block_backward(ParamSource& src, int l, const float* x, const Acts& a) {
    const int N = N_, C = C_;
    const size_t NC = static_cast<size_t>(N) * C;
    for (int p = 0; p < kGptBlockParts; ++p)
      STRATA_CUDA_CHECK(cudaMemsetAsync(dblk_[p].f(), 0, numel_[p] * 4, stream_));
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dres2_.f(), dx_.f(), NC * 4, cudaMemcpyDeviceToDevice, stream_));
    STRATA_RETURN_IF_ERROR(get(src, l, {kFcprojW}));
    STRATA_RETURN_IF_ERROR(mm_backward(dfch_.f(), dblk_[kFcprojW].f(), dblk_[kFcprojB].f(), dx_.f(), a.fch_gelu.h(),
                                       blk_[kFcprojW], N, 4 * C, C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kFcprojW}));
    STRATA_RETURN_IF_ERROR(give(src, l, {kFcprojW, kFcprojB}));
    STRATA_RETURN_IF_ERROR(k::gelu_backward(dfch_.f(), dfch_.f(), a.fch.f(), 4 * NC, stream_));
    STRATA_RETURN_IF_ERROR(get(src, l, {kFcW}));
    STRATA_RETURN_IF_ERROR(
        mm_backward(dln_.f(), dblk_[kFcW].f(), dblk_[kFcB].f(), dfch_.f(), a.ln2.h(), blk_[kFcW], N, C, 4 * C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kFcW}));
    STRATA_RETURN_IF_ERROR(give(src, l, {kFcW, kFcB}));
    STRATA_RETURN_IF_ERROR(get(src, l, {kLn2W}));
    STRATA_RETURN_IF_ERROR(layernorm_backward(dres2_.f(), dblk_[kLn2W].f(), dblk_[kLn2B].f(), a.res2.f(), blk_[kLn2W],
                                              a.ln2_mean.f(), a.ln2_rstd.f()));
    STRATA_RETURN_IF_ERROR(put(src, l, {kLn2W}));
    STRATA_RETURN_IF_ERROR(give(src, l, {kLn2W, kLn2B}));
    STRATA_RETURN_IF_ERROR(get(src, l, {kProjW}));
    STRATA_RETURN_IF_ERROR(
        mm_backward(datty_.f(), dblk_[kProjW].f(), dblk_[kProjB].f(), dres2_.f(), a.atty.h(), blk_[kProjW], N, C, C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kProjW}));
    STRATA_RETURN_IF_ERROR(give(src, l, {kProjW, kProjB}));
    STRATA_RETURN_IF_ERROR(attention_backward(a));
    STRATA_RETURN_IF_ERROR(get(src, l, {kQkvW}));
    STRATA_RETURN_IF_ERROR(
        mm_backward(dln_.f(), dblk_[kQkvW].f(), dblk_[kQkvB].f(), dqkv_.f(), a.ln1.h(), blk_[kQkvW], N, C, 3 * C));
    STRATA_RETURN_IF_ERROR(put(src, l, {kQkvW}));
    STRATA_RETURN_IF_ERROR(give(src, l, {kQkvW, kQkvB}));
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dx_.f(), dres2_.f(), NC * 4, cudaMemcpyDeviceToDevice, stream_));
    STRATA_RETURN_IF_ERROR(get(src, l, {kLn1W}));
    STRATA_RETURN_IF_ERROR(layernorm_backward(dx_.f(), dblk_[kLn1W].f(), dblk_[kLn1B].f(), x, blk_[kLn1W],
                                              a.ln1_mean.f(), a.ln1_rstd.f()));
    STRATA_RETURN_IF_ERROR(put(src, l, {kLn1W}));
    return give(src, l, {kLn1W, kLn1B});
  }
  // From dln_ (the gradient at the LayerNorm's output): dx += d(input); dw, db += their gradients.
  Status layernorm_backward(float* dx, float* dw, float* db, const float* x, const uint16_t* w, const float* mean,
                            const float* rstd) {
    STRATA_RETURN_IF_ERROR(k::layernorm_backward(dx, tmp_.f(), dln_.f(), x, w, mean, rstd, N_, C_, stream_));
    STRATA_RETURN_IF_ERROR(colsum(dw, tmp_.f(), N_, C_));
    return colsum(db, dln_.f(), N_, C_);
  }

  // --- whole model --------------------------------------------------------------------------
  StatusOr<double> forward(ParamSource& src, const int32_t* inputs, const int32_t* targets, bool keep_head) {
    STRATA_RETURN_IF_ERROR(check_tokens(inputs, targets));
    if (src.dtype() != DType::kBF16)
      return Status(StatusCode::kUnsupported, "the GPT model's CUDA path computes from bf16 params, not " +
                                                  std::string(dtype_name(src.dtype())) +
                                                  "; train with bf16 (--precision bf16)");
    const size_t N = static_cast<size_t>(N_);
    STRATA_CUDA_CHECK(cudaMemcpyAsync(tok_in_.i(), inputs, N * 4, cudaMemcpyHostToDevice, stream_));
    STRATA_CUDA_CHECK(cudaMemcpyAsync(tok_tgt_.i(), targets, N * 4, cudaMemcpyHostToDevice, stream_));
    STRATA_ASSIGN_OR_RETURN(const uint16_t* wte, fetch(src, "wte"));
    STRATA_ASSIGN_OR_RETURN(const uint16_t* wpe, fetch(src, "wpe"));
    STRATA_RETURN_IF_ERROR(k::encoder_forward(xs_[0].f(), tok_in_.i(), wte, wpe, B_, T_, C_, stream_));
    STRATA_RETURN_IF_ERROR(src.release("wte"));
    STRATA_RETURN_IF_ERROR(src.release("wpe"));
    for (int l = 0; l < L_; ++l) {
      STRATA_RETURN_IF_ERROR(block_forward(src, l, xs_[static_cast<size_t>(l)].f(),
                                           acts_[ckpt_ ? 0 : static_cast<size_t>(l)],
                                           xs_[static_cast<size_t>(l) + 1].f()));
    }
    STRATA_ASSIGN_OR_RETURN(lnf_w_, fetch(src, "lnf.w"));
    STRATA_ASSIGN_OR_RETURN(lnf_b_, fetch(src, "lnf.b"));
    STRATA_RETURN_IF_ERROR(k::layernorm_forward(lnf_.h(), lnf_mean_.f(), lnf_rstd_.f(),
                                                xs_[static_cast<size_t>(L_)].f(), lnf_w_, lnf_b_, N_, C_, stream_));
    STRATA_ASSIGN_OR_RETURN(wte_, fetch(src, "wte"));
    STRATA_RETURN_IF_ERROR(mm_forward(logits_.f(), lnf_.h(), wte_, nullptr, N_, C_, V_));  // tied head
    STRATA_RETURN_IF_ERROR(
        k::crossentropy_forward(probs_.f(), losses_.f(), logits_.f(), tok_tgt_.i(), N_, V_, stream_));
    STRATA_CUDA_CHECK(cudaMemcpyAsync(host_losses_, losses_.f(), N * 4, cudaMemcpyDeviceToHost, stream_));
    if (!keep_head) {
      for (const char* name : {"lnf.w", "lnf.b", "wte"}) STRATA_RETURN_IF_ERROR(src.release(name));
    }
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double total = 0;
    for (size_t i = 0; i < N; ++i) total += host_losses_[i];  // in order: the same sum every run
    return total / static_cast<double>(N);
  }

  Status backward(ParamSource& src, const int32_t* inputs, float loss_scale) {
    const size_t C = static_cast<size_t>(C_), V = static_cast<size_t>(V_), Ts = static_cast<size_t>(shape_.max_seq);
    // Positions of each token, ascending, for the embedding's gradient (a counting sort).
    std::vector<int32_t> offsets(V + 1, 0), positions(static_cast<size_t>(N_));
    for (int i = 0; i < N_; ++i) ++offsets[static_cast<size_t>(inputs[i]) + 1];
    for (size_t v = 0; v < V; ++v) offsets[v + 1] += offsets[v];
    std::vector<int32_t> next(offsets.begin(), offsets.end() - 1);
    for (int i = 0; i < N_; ++i) positions[static_cast<size_t>(next[static_cast<size_t>(inputs[i])]++)] = i;
    STRATA_CUDA_CHECK(cudaMemcpyAsync(tok_offsets_.i(), offsets.data(), (V + 1) * 4, cudaMemcpyHostToDevice, stream_));
    STRATA_CUDA_CHECK(
        cudaMemcpyAsync(tok_pos_.i(), positions.data(), positions.size() * 4, cudaMemcpyHostToDevice, stream_));

    STRATA_RETURN_IF_ERROR(
        k::crossentropy_backward(dlogits_.f(), probs_.f(), tok_tgt_.i(), loss_scale, N_, V_, stream_));
    STRATA_CUDA_CHECK(cudaMemsetAsync(dwte_.f(), 0, V * C * 4, stream_));
    STRATA_CUDA_CHECK(cudaMemsetAsync(dwpe_.f(), 0, Ts * C * 4, stream_));
    STRATA_CUDA_CHECK(cudaMemsetAsync(dlnf_w_.f(), 0, C * 4, stream_));
    STRATA_CUDA_CHECK(cudaMemsetAsync(dlnf_b_.f(), 0, C * 4, stream_));
    STRATA_RETURN_IF_ERROR(mm_backward(dln_.f(), dwte_.f(), nullptr, dlogits_.f(), lnf_.h(), wte_, N_, C_, V_));
    STRATA_RETURN_IF_ERROR(src.release("wte"));
    STRATA_CUDA_CHECK(cudaMemsetAsync(dx_.f(), 0, static_cast<size_t>(N_) * C * 4, stream_));
    STRATA_RETURN_IF_ERROR(layernorm_backward(dx_.f(), dlnf_w_.f(), dlnf_b_.f(), xs_[static_cast<size_t>(L_)].f(),
                                              lnf_w_, lnf_mean_.f(), lnf_rstd_.f()));
    STRATA_RETURN_IF_ERROR(src.release("lnf.w"));
    STRATA_RETURN_IF_ERROR(src.release("lnf.b"));
    STRATA_RETURN_IF_ERROR(hand_over(src, "lnf.w", dlnf_w_.f(), gblk_[kLn1W].h(), C));
    STRATA_RETURN_IF_ERROR(hand_over(src, "lnf.b", dlnf_b_.f(), gblk_[kLn1B].h(), C));
    for (int l = L_ - 1; l >= 0; --l) {
      Acts& a = acts_[ckpt_ ? 0 : static_cast<size_t>(l)];
      if (ckpt_) {  // recompute the block from its saved input
        STRATA_RETURN_IF_ERROR(block_forward(src, l, xs_[static_cast<size_t>(l)].f(), a, tmp_.f()));
      }
      STRATA_RETURN_IF_ERROR(block_backward(src, l, xs_[static_cast<size_t>(l)].f(), a));
    }
    STRATA_RETURN_IF_ERROR(
        k::encoder_backward(dwte_.f(), dwpe_.f(), dx_.f(), tok_offsets_.i(), tok_pos_.i(), B_, T_, C_, V_, stream_));
    STRATA_RETURN_IF_ERROR(hand_over(src, "wte", dwte_.f(), gbits_.h(), V * C));
    // gbits_ is free again: wpe's cast is queued after the copy of wte's bits.
    STRATA_RETURN_IF_ERROR(hand_over(src, "wpe", dwpe_.f(), gbits_.h(), Ts * C));
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return Status::ok();
  }

  const int N_, C_, NH_, V_, L_;
  const bool ckpt_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  float* host_losses_ = nullptr;
  DevBuf tok_in_, tok_tgt_, tok_offsets_, tok_pos_;
  std::vector<DevBuf> xs_;
  std::vector<Acts> acts_;
  DevBuf q_, kk_, v_, y_, tt_, tmp_, lnf_, lnf_mean_, lnf_rstd_, logits_, probs_, losses_, dlogits_, dout_bf_;
  DevBuf dx_, dres2_, dln_, dfch_, datty_, dqkv_, dq_, dk_, dv_, dy_, ones_;
  DevBuf dblk_[kGptBlockParts], gblk_[kGptBlockParts];
  size_t numel_[kGptBlockParts] = {};
  DevBuf dwte_, dwpe_, dlnf_w_, dlnf_b_, gbits_;
  const uint16_t* blk_[kGptBlockParts] = {};
  const uint16_t *lnf_w_ = nullptr, *lnf_b_ = nullptr, *wte_ = nullptr;
};

}  // namespace

StatusOr<std::unique_ptr<GptModel>> make_cuda_gpt(const GptShape& s, int B, int T, bool checkpointing) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return Status(StatusCode::kUnsupported, "the GPT model's CUDA compute path needs a GPU, and none is usable here");
  }
  auto m = std::make_unique<CudaModel>(s, B, T, checkpointing);
  STRATA_RETURN_IF_ERROR(m->init());
  return std::unique_ptr<GptModel>(std::move(m));
}

}  // namespace strata::train
