"""strata.torch on every placement against a plain-torch reference: a small MLP and a small
transformer, bf16 params with fp32 AdamW masters, 32 steps of 2 accumulated micro-batches with
clipping. The fp32 masters match the reference within bf16 tolerance, and are identical (bit for
bit) across placements; each placement's device budget is below what it would need in memory."""
import pytest
import torch
import torch.nn.functional as F

import strata.torch as st
from conftest import PLACEMENTS, Reference, engine_config, quiet

STEPS, GAS = 32, 2


class ResMlp(torch.nn.Module):
    """24 -> 64, 6 residual GELU layers of 64 -> 64, 64 -> 8: 27 k params, no weight larger than
    a chunk."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = torch.nn.Linear(24, 64), torch.nn.Linear(64, 8)
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(6))

    def forward(self, x):
        h = self.inp(x)
        for lin in self.hidden:
            h = h + lin(F.gelu(h))
        return self.out(h)


def mlp():
    torch.manual_seed(1)
    return ResMlp()


class Block(torch.nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(c), torch.nn.LayerNorm(c)
        # No qkv bias: the key bias never changes attention, so its gradient is rounding noise that
        # Adam would turn into a random walk no two implementations share.
        self.qkv, self.proj = torch.nn.Linear(c, 3 * c, bias=False), torch.nn.Linear(c, c)
        self.fc, self.out = torch.nn.Linear(c, 4 * c), torch.nn.Linear(4 * c, c)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyTransformer(torch.nn.Module):
    """Token and position embeddings, two blocks, a head tied to the token embedding."""

    def __init__(self, vocab=64, c=64, heads=4, layers=6, seq=16):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(vocab, c), torch.nn.Embedding(seq, c)
        self.blocks = torch.nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.lnf = torch.nn.LayerNorm(c)
        self.head = torch.nn.Linear(c, vocab, bias=False)
        self.head.weight = self.wte.weight
        for e in (self.wte, self.wpe):
            torch.nn.init.normal_(e.weight, std=0.02)  # GPT-2's: logits start near uniform

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.lnf(x))


def transformer():
    torch.manual_seed(2)
    return TinyTransformer()


def batches(kind, n):
    g = torch.Generator().manual_seed(7)
    for _ in range(n):
        if kind == "mlp":
            x = torch.randn(16, 24, generator=g)
            yield x.to(torch.bfloat16), torch.sin(x[:, :8] * 2).to(torch.bfloat16)
        else:
            # Rows count up from a random start with a random stride: the next token is learnable.
            start, stride = torch.randint(0, 64, (4, 1), generator=g), torch.randint(1, 4, (4, 1), generator=g)
            seq = (start + stride * torch.arange(17)) % 64
            yield seq[:, :16], seq[:, 1:]


def loss_of(kind, out, y):
    if kind == "mlp":
        return ((out.float() - y.float()) ** 2).mean()
    return F.cross_entropy(out.float().view(-1, out.shape[-1]), y.reshape(-1))


def train(kind, model, trainer, speculated=None):
    losses = []
    for x, y in batches(kind, STEPS * GAS):
        loss = loss_of(kind, trainer(x), y)
        trainer.backward(loss)
        r = trainer.step()
        if speculated is not None:
            speculated.append(r.chunks_speculated)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_every_placement_matches_the_torch_reference_and_each_other(kind, tmp_path):  # noqa: C901
    make = mlp if kind == "mlp" else transformer
    ref = Reference(make(), gas=GAS)
    ref_losses = train(kind, ref.model, ref)
    names = [n for n, _ in make().named_parameters()]
    bit16_bytes = sum(p.numel() for p in make().parameters()) * 2
    results = {}
    for placement in PLACEMENTS:
        nv = tmp_path / placement.replace(" ", "_").replace("+", "")
        nv.mkdir()
        offloaded = placement.startswith("params")
        budget = bit16_bytes // 2 if offloaded else 10 * bit16_bytes + (256 << 10)
        # Chunks hold the largest weight (64 x 64, 256 x 64); the MLP's budget leaves room for two
        # working buffers and one gradient bucket.
        extra = {"chunk_bytes": 8192, "live_chunks": 2, "grad_buckets": 1} if kind == "mlp" else {"chunk_bytes": 32768}
        eng = st.initialize(make(), engine_config(placement, nv, gas=GAS, device_bytes=budget, **extra), log=quiet)
        assert eng.resident == (not offloaded), placement
        speculated = []
        losses = train(kind, eng.module, eng, speculated)
        if placement in ("optimizer host", "params host"):  # host state: updated during backward
            assert sum(speculated) > 0, placement
        masters = eng.state_dict()
        stats = eng.get_stats()
        assert stats["optimizer_steps"] == STEPS and stats["micro_steps"] == STEPS * GAS, placement
        assert stats["device_peak_bytes"] <= budget, placement
        if offloaded:
            assert budget < bit16_bytes, "the device holds less than the model's bit16 params"
        eng.close()
        results[placement] = (losses, masters)
    base_losses, base = results["device"]
    for placement, (losses, masters) in results.items():
        assert losses == base_losses, placement
        for n in names:
            assert torch.equal(masters[n], base[n]), f"{placement}: {n} differs from the all-on-device run"
    # Against plain torch: the same training up to fp32 rounding in Adam, amplified by bf16 params.
    for i, n in enumerate(names):
        ref_m = ref.masters[i]
        err = (base[n] - ref_m).abs().max().item()
        assert err <= 2e-2 * max(1.0, ref_m.abs().max().item()), f"{n}: max |strata - torch| = {err}"
    assert abs(base_losses[-1] - ref_losses[-1]) <= 2e-2 * abs(ref_losses[-1])
    assert sum(base_losses[-4:]) < 0.95 * sum(base_losses[:4]), "the loss falls"
