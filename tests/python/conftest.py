"""Shared by the Python tests: the engine configs of every placement, a plain-torch reference
trainer (bf16 params, fp32 master AdamW, global-norm clipping, gradient accumulation), and the
device budget checks. The library under test is the build's (STRATA_LIBRARY, set by CTest)."""
import copy
import math

import pytest
import torch

PLACEMENTS = {
    "device": {"stage": 0},
    "optimizer host": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
    "optimizer nvme": {"stage": 2, "offload_optimizer": {"device": "nvme"}},
    "params host": {"stage": 3, "offload_param": {"device": "cpu"}, "offload_optimizer": {"device": "cpu"}},
    "params + optimizer nvme": {"stage": 3, "offload_param": {"device": "nvme"}, "offload_optimizer": {"device": "nvme"}},
}


def engine_config(placement, nvme_dir, lr=3e-3, weight_decay=0.01, clip=0.5, gas=2, device_bytes=1 << 20,
                  chunk_bytes=8192, **strata):
    z = copy.deepcopy(PLACEMENTS[placement])
    for part in ("offload_optimizer", "offload_param"):
        if z.get(part, {}).get("device") == "nvme":
            z[part]["nvme_path"] = str(nvme_dir)
    st = {"device": "host", "device_bytes": device_bytes, "chunk_bytes": chunk_bytes, "live_chunks": 4}
    st.update(strata)
    return {"bf16": {"enabled": True}, "gradient_accumulation_steps": gas, "gradient_clipping": clip,
            "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": weight_decay}},
            "zero_optimization": z, "strata": st}


class Reference:
    """Plain torch: the model's params in bf16, fp32 masters updated by torch.optim.AdamW with the
    micro-batches' bf16 gradients summed in fp32, averaged, clipped by the global norm (torch's
    clip_grad_norm_ factor)."""

    def __init__(self, model, lr=3e-3, weight_decay=0.01, clip=0.5, gas=2):
        self.model = model
        self.params = list(model.parameters())
        self.masters = [p.detach().clone().float().requires_grad_(False) for p in self.params]
        model.to(torch.bfloat16)
        self.opt = torch.optim.AdamW(self.masters, lr=lr, weight_decay=weight_decay, eps=1e-8)
        self.clip, self.gas = clip, gas
        self.acc = [torch.zeros_like(m) for m in self.masters]
        self.micro = 0

    def __call__(self, *a, **k):
        return self.model(*a, **k)

    def backward(self, loss):
        loss.backward()
        for a, p in zip(self.acc, self.params):
            if p.grad is not None:
                a += p.grad.float()
                p.grad = None

    def step(self):
        self.micro += 1
        if self.micro % self.gas:
            return
        grads = [a / self.gas for a in self.acc]
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        coef = min(1.0, self.clip / (norm + 1e-6)) if self.clip > 0 else 1.0
        for m, g in zip(self.masters, grads):
            m.grad = g * coef
        self.opt.step()
        self.opt.zero_grad()
        for a in self.acc:
            a.zero_()
        with torch.no_grad():
            for m, p in zip(self.masters, self.params):
                p.copy_(m.to(torch.bfloat16))


@pytest.fixture
def nvme_dir(tmp_path):
    d = tmp_path / "nvme"
    d.mkdir()
    return d


def quiet(_line):
    pass
