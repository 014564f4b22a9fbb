"""Run under `mpirun -np N` (test_ranks.py): each rank trains its share of every global batch
through strata.torch with a communicator made from mpirun's world, at ZeRO stage 2 and stage 3
(params offloaded); a single-rank engine in the same process accumulates all N shares per step.
Every rank's fp32 masters must equal the single rank's. Exit status 0 on success."""
import sys
import tempfile

import torch
import torch.nn.functional as F

import strata
import strata.torch as st

torch.set_num_threads(1)
STEPS = 6


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.a, self.b, self.c = torch.nn.Linear(16, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 4)

    def forward(self, x):
        h = F.gelu(self.a(x))
        return self.c(h + F.gelu(self.b(h)))


def config(zero, gas):
    return {"bf16": {"enabled": True}, "gradient_accumulation_steps": gas, "gradient_clipping": 0.5,
            "optimizer": {"type": "AdamW", "params": {"lr": 5e-3, "weight_decay": 0.01}}, "zero_optimization": zero,
            "strata": {"device": "host", "device_bytes": 1 << 20, "chunk_bytes": 8192, "live_chunks": 4}}


def shares(step, n):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8 * n, 16, generator=g)
    y = torch.sin(x[:, :4])
    return [(x[8 * r:8 * (r + 1)].to(torch.bfloat16), y[8 * r:8 * (r + 1)].to(torch.bfloat16)) for r in range(n)]


def micro(eng, x, y):
    loss = ((eng(x).float() - y.float()) ** 2).mean()
    eng.backward(loss)
    eng.step()


def main():
    comm = strata.Comm.mpi(timeout_s=120)
    rank, n = comm.rank, comm.world_size
    failures = 0
    zeros = {"stage 2": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
             "stage 3": {"stage": 3, "offload_param": {"device": "cpu"}, "offload_optimizer": {"device": "cpu"}}}
    for what, zero in zeros.items():
        ranks = st.initialize(Net(), config(zero, 1), comm=comm, log=lambda _l: None)
        single = st.initialize(Net(), config(zero, n), comm=None, log=lambda _l: None)
        for step in range(STEPS):
            parts = shares(step, n)
            micro(ranks, *parts[rank])
            for x, y in parts:
                micro(single, x, y)
        got, want = ranks.state_dict(), single.state_dict()  # collective across the ranks
        for name in want:
            err = (got[name] - want[name]).abs().max().item()
            if not err <= 1e-5 * max(1.0, want[name].abs().max().item()):
                print(f"rank {rank}, {what}: {name} differs by {err}", flush=True)
                failures += 1
        ranks.close()
        single.close()
    comm.destroy()
    print(f"ranks_check rank {rank} of {n}: {'ok' if failures == 0 else str(failures) + ' failures'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
