#!/usr/bin/env python3
"""bench/torch_step: a Hugging Face GPT-2 trained through strata.torch on each placement, beside
plain torch in memory (its peer) and beside the bound bench/train uses, all measured in the same
run:

    bound = max(compute, host<->device bytes / copy rate, NVMe reads / read rate + writes / write
                rate, params / CPU Adam rate)

compute = the same model's step through strata with everything on the device (the in-memory
placement); copy rate = torch copying 64 MiB between pinned host buffers (the emulated device's
copies are memcpy) or host -> GPU on CUDA; NVMe rates = O_DIRECT writes and reads of 64 MiB blocks in
--nvme-dir; CPU Adam rate = strata.torch.CPUAdam on 32 M fp32 params. Plain torch: bf16 params and
fp32 master AdamW (torch.optim.AdamW) in memory — what a user runs without strata. One JSON object
per (size, placement) on stdout, a table on stderr.

    build/venv/bin/python bench/torch_step.py --nvme-dir /tmp/strata_torch_bench [--sizes 4x128,6x256]
        [--batch 4] [--seq 128] [--steps 4] [--device host|cuda]
"""
import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))
import strata  # noqa: E402
import strata.torch as st  # noqa: E402

try:
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError:  # pragma: no cover
    sys.exit("bench/torch_step needs transformers (scripts/python_env.sh)")

PLACEMENTS = {
    "device": {"stage": 0},
    "optimizer cpu": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
    "optimizer nvme": {"stage": 2, "offload_optimizer": {"device": "nvme"}},
    "params + optimizer cpu": {"stage": 3, "offload_param": {"device": "cpu"}, "offload_optimizer": {"device": "cpu"}},
    "params + optimizer nvme": {"stage": 3, "offload_param": {"device": "nvme"}, "offload_optimizer": {"device": "nvme"}},
}


def gpt2(layers, channels, seq, device):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=256, n_positions=seq, n_embd=channels, n_layer=layers, n_head=max(1, channels // 64),
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).to(device)


def batch(b, t, device, step):
    g = torch.Generator().manual_seed(step)
    start, stride = torch.randint(0, 256, (b, 1), generator=g), torch.randint(1, 5, (b, 1), generator=g)
    return ((start + stride * torch.arange(t)) % 256).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step_fn, steps, device):
    step_fn(0)  # warm-up: plans, allocations, the recorded fetch order
    times = []
    for s in range(1, steps + 1):
        sync(device)
        t0 = time.perf_counter()
        step_fn(s)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_torch(layers, channels, b, t, steps, device):
    model = gpt2(layers, channels, t, device)
    masters = [p.detach().clone().float() for p in model.parameters()]
    model.to(torch.bfloat16)
    opt = torch.optim.AdamW(masters, lr=1e-4)

    def step(s):
        ids = batch(b, t, device, s)
        model(ids, labels=ids).loss.backward()
        for m, p in zip(masters, model.parameters()):
            m.grad = p.grad.float()
            p.grad = None
        torch.nn.utils.clip_grad_norm_(masters, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for m, p in zip(masters, model.parameters()):
                p.copy_(m)
    return time_steps(step, steps, device)


def through_strata(layers, channels, b, t, steps, device, placement, nvme_dir, budget, chunk):
    model = gpt2(layers, channels, t, device)
    z = json.loads(json.dumps(PLACEMENTS[placement]))
    for part in ("offload_optimizer", "offload_param"):
        if z.get(part, {}).get("device") == "nvme":
            z[part]["nvme_path"] = nvme_dir
    st_cfg = {"device": "cuda" if device.type == "cuda" else "host", "chunk_bytes": chunk, "live_chunks": 4}
    if device.type != "cuda" or budget:
        st_cfg["device_bytes"] = budget
    cfg = {"bf16": {"enabled": True}, "gradient_clipping": 1.0, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
           "zero_optimization": z, "strata": st_cfg}
    eng = st.initialize(model, cfg, log=lambda _l: None)

    def step(s):
        ids = batch(b, t, device, s)
        eng.backward(eng(ids, labels=ids).loss)
        eng.step()
    step(0)  # warm-up
    before = eng.get_stats()
    times = []
    for s in range(1, steps + 1):
        sync(device)
        t0 = time.perf_counter()
        step(s)
        sync(device)
        times.append(time.perf_counter() - t0)
    after = eng.get_stats()
    eng.close()
    per = {k: (after[k] - before[k]) / steps for k in ("bytes_h2d", "bytes_d2h", "bytes_nvme_read", "bytes_nvme_write")}
    return statistics.median(times), per


def copy_gbps(device):
    n = 64 << 20
    src = torch.empty(n, dtype=torch.uint8).pin_memory() if device.type == "cuda" else torch.empty(n, dtype=torch.uint8)
    dst = torch.empty(n, dtype=torch.uint8, device=device)
    src.fill_(1)
    ts = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src, non_blocking=False)
        sync(device)
        ts.append(time.perf_counter() - t0)
    return n / min(ts) / 1e9


def nvme_gbps(directory):
    """O_DIRECT writes, then reads, of 16 x 64 MiB in `directory` (page-aligned mmap buffers)."""
    block, count = 64 << 20, 16
    buf = mmap.mmap(-1, block)
    buf.write(b"\x01" * block)
    path = os.path.join(directory, "torch_step.probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        t0 = time.perf_counter()
        for i in range(count):
            os.pwritev(fd, [buf], i * block)
        os.fsync(fd)
        w = block * count / (time.perf_counter() - t0) / 1e9
        t0 = time.perf_counter()
        for i in range(count):
            os.preadv(fd, [buf], i * block)
        r = block * count / (time.perf_counter() - t0) / 1e9
    finally:
        os.close(fd)
        os.unlink(path)
    return w, r


def adam_params_per_s():
    n = 32 << 20
    p = torch.zeros(n)
    p.grad = torch.full((n,), 1e-3)
    opt = st.CPUAdam([p], lr=1e-4)
    opt.step()
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        opt.step()
        ts.append(time.perf_counter() - t0)
    return n / min(ts)


def git_sha():
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nvme-dir", default="/tmp/strata_torch_bench")
    ap.add_argument("--sizes", default="4x128,6x256", help="LAYERSxCHANNELS,...")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "host")
    a = ap.parse_args()
    device = torch.device("cuda" if a.device == "cuda" else "cpu")
    os.makedirs(a.nvme_dir, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    cp = copy_gbps(device)
    nw, nr = nvme_gbps(a.nvme_dir)
    adam = adam_params_per_s()
    print(f"torch_step: {a.device}, torch {torch.__version__}, strata {strata.__version__}; copy {cp:.2f} GB/s, "
          f"NVMe write {nw:.2f} / read {nr:.2f} GB/s, CPU Adam {adam / 1e6:.0f} M params/s", file=sys.stderr)
    for size in a.sizes.split(","):
        layers, channels = (int(x) for x in size.split("x"))
        tokens = a.batch * a.seq
        torch_s = plain_torch(layers, channels, a.batch, a.seq, a.steps, device)
        params = sum(p.numel() for p in gpt2(layers, channels, a.seq, "cpu").parameters())
        compute = None
        # A chunk holds the largest weight (the MLP's 4C x C in bf16); offloaded params get a device
        # budget of half their bf16 bytes (or the 4 working buffers + 2 gradient buckets, if more).
        chunk = (8 * channels * channels + 4095) // 4096 * 4096
        for placement in PLACEMENTS:
            offloaded = placement.startswith("params")
            budget = (max(params, 6 * chunk + (64 << 10)) if offloaded
                      else (0 if device.type == "cuda" else params * 20 + (256 << 20)))
            with tempfile.TemporaryDirectory(dir=a.nvme_dir) as nv:
                secs, per = through_strata(layers, channels, a.batch, a.seq, a.steps, device, placement, nv, budget, chunk)
            if placement == "device":
                compute = secs
            host_adam = params / adam if placement != "device" else 0.0
            bound = max(compute, (per["bytes_h2d"] + per["bytes_d2h"]) / (cp * 1e9),
                        per["bytes_nvme_read"] / (nr * 1e9) + per["bytes_nvme_write"] / (nw * 1e9), host_adam)
            row = {"bench": "torch_step", "git_sha": git_sha(), "where": {"device": a.device, "torch": torch.__version__},
                   "model": {"layers": layers, "channels": channels, "params": params}, "batch": a.batch, "seq": a.seq,
                   "placement": placement, "step_ms": secs * 1e3, "tokens_per_s": tokens / secs,
                   "torch_in_memory_ms": torch_s * 1e3, "vs_torch": secs / torch_s, "bound_ms": bound * 1e3,
                   "vs_bound": secs / bound, "bytes_per_step": per, "device_budget": budget, "chunk_bytes": chunk}
            print(json.dumps(row), flush=True)
            print(f"{layers}x{channels} ({params / 1e6:.1f} M) {placement:24s} {secs * 1e3:8.1f} ms  {tokens / secs:8.0f} tok/s  "
                  f"torch {torch_s * 1e3:8.1f} ms  x{secs / torch_s:5.2f}  bound {bound * 1e3:8.1f} ms  x{secs / bound:5.2f}",
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
