"""strata.torch.CPUAdam against torch.optim.AdamW / Adam element by element over 100 steps (fp32
params and gradients, a learning-rate schedule, weight decay), on every ISA this CPU has."""
import pytest
import torch

import strata
import strata.torch as st

ISAS = ["scalar", "avx2", "avx512"]


def problem(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) for n in (1, 7, 33, 1000, 4099)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("adamw", [True, False])
def test_cpu_adam_matches_torch_over_100_steps(isa, adamw):
    try:
        ours = [p.clone() for p in problem(1)]
        opt = st.CPUAdam(ours, lr=1e-2, betas=(0.9, 0.98), eps=1e-7, weight_decay=0.05, adamw_mode=adamw, isa=isa)
    except strata.Unsupported:
        pytest.skip(f"this CPU has no {isa}")
    assert opt.isa == isa
    theirs = [p.clone().requires_grad_(True) for p in problem(1)]
    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    ref = cls(theirs, lr=1e-2, betas=(0.9, 0.98), eps=1e-7, weight_decay=0.05, foreach=False)
    g = torch.Generator().manual_seed(2)
    for step in range(100):
        for group in (opt.param_groups[0], ref.param_groups[0]):
            group["lr"] = 1e-2 * (0.98 ** step)  # a schedule: the learning rate changes every step
        for a, b in zip(ours, theirs):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=2e-5, atol=2e-6)
        state_a, state_b = opt.state[a], ref.state[b]
        torch.testing.assert_close(state_a["exp_avg"], state_b["exp_avg"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(state_a["exp_avg_sq"], state_b["exp_avg_sq"], rtol=1e-5, atol=1e-9)


def test_cpu_adam_takes_bit16_gradients_and_refuses_what_it_cannot_update():
    p = torch.zeros(100)
    opt = st.CPUAdam([p], lr=0.1)
    p.grad_dtype = None  # recent torch checks a gradient's dtype against the param's unless told not to
    p.grad = torch.ones(100, dtype=torch.bfloat16)
    opt.step()
    assert torch.all(p < 0)
    q = torch.zeros(10, dtype=torch.float64)
    bad = st.CPUAdam([q])
    q.grad = torch.ones(10, dtype=torch.float64)
    with pytest.raises(strata.InvalidArgument, match="contiguous fp32 CPU tensors"):
        bad.step()
    with pytest.raises(strata.InvalidArgument, match="isa 'sse2'"):
        st.CPUAdam([p], isa="sse2")
    r = torch.zeros(4)
    fine = st.CPUAdam([r], lr=1e-3, betas=(1.5, 0.999))
    r.grad = torch.ones(4)
    with pytest.raises(strata.InvalidArgument, match="beta1 = 1.5"):
        fine.step()
