"""strata.torch.CPULion and CPUAdagrad element by element over 50 steps: CPUAdagrad against
torch.optim.Adagrad, CPULion against a float64 Lion written here (torch has none), on every ISA
this CPU has, with a learning-rate schedule and weight decay."""
import pytest
import torch

import strata
import strata.torch as st

ISAS = ["scalar", "avx2", "avx512"]


def problem(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) for n in (1, 7, 33, 1000, 4099)]


def make(cls, params, isa, **kw):
    try:
        return cls(params, isa=isa, **kw)
    except strata.Unsupported:
        pytest.skip(f"this CPU has no {isa}")


@pytest.mark.parametrize("isa", ISAS)
def test_cpu_adagrad_matches_torch_over_50_steps(isa):
    ours = [p.clone() for p in problem(1)]
    opt = make(st.CPUAdagrad, ours, isa, lr=1e-2, eps=1e-10, weight_decay=0.05)
    assert opt.isa == isa
    theirs = [p.clone().requires_grad_(True) for p in problem(1)]
    ref = torch.optim.Adagrad(theirs, lr=1e-2, eps=1e-10, weight_decay=0.05, foreach=False)
    g = torch.Generator().manual_seed(2)
    for step in range(50):
        for group in (opt.param_groups[0], ref.param_groups[0]):
            group["lr"] = 1e-2 * (0.98 ** step)
        for a, b in zip(ours, theirs):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=2e-5, atol=2e-6)
        torch.testing.assert_close(opt.state[a]["sum"], ref.state[b]["sum"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("isa", ISAS)
def test_cpu_lion_matches_a_float64_lion_over_50_steps(isa):
    ours = [p.clone() for p in problem(3)]
    opt = make(st.CPULion, ours, isa, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    ref_p = [p.clone().double() for p in problem(3)]
    ref_m = [torch.zeros_like(p) for p in ref_p]
    g = torch.Generator().manual_seed(4)
    for step in range(50):
        lr = 1e-3 * (0.98 ** step)
        opt.param_groups[0]["lr"] = lr
        for i, a in enumerate(ours):
            grad = torch.randn(a.shape, generator=g)
            a.grad = grad.clone()
            gd = grad.double()
            c = 0.9 * ref_m[i] + 0.1 * gd
            ref_p[i] = ref_p[i] * (1 - lr * 0.1) - lr * torch.sign(c)
            ref_m[i] = 0.99 * ref_m[i] + 0.01 * gd
        opt.step()
    for a, p, m in zip(ours, ref_p, ref_m):
        torch.testing.assert_close(a.double(), p, rtol=2e-5, atol=1e-5)
        torch.testing.assert_close(opt.state[a]["exp_avg"].double(), m, rtol=1e-5, atol=1e-7)


def test_cpu_lion_and_adagrad_refuse_what_they_cannot_update():
    q = torch.zeros(10, dtype=torch.float64)
    bad = st.CPULion([q])
    q.grad = torch.ones(10, dtype=torch.float64)
    with pytest.raises(strata.InvalidArgument, match="CPULion: params must be contiguous fp32 CPU tensors"):
        bad.step()
    r = torch.zeros(4)
    fine = st.CPUAdagrad([r], eps=0.0)
    r.grad = torch.ones(4)
    with pytest.raises(strata.InvalidArgument, match="Adagrad hyper-parameter eps = 0"):
        fine.step()
    p = torch.zeros(100)
    lion = st.CPULion([p], lr=0.1)
    p.grad_dtype = None  # recent torch checks a gradient's dtype against the param's unless told not to
    p.grad = torch.ones(100, dtype=torch.bfloat16)
    lion.step()
    assert torch.allclose(p, torch.full((100,), -0.1))
