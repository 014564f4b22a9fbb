"""A Hugging Face GPT2LMHeadModel (built from a small GPT2Config: tied embeddings, no download)
trained through strata.torch with params and optimizer offloaded and a device budget below its
bf16 params: the loss falls and matches the plain-torch reference, save / load resumes exactly,
and the safetensors export reloaded with from_pretrained gives the trained model's logits."""
import pytest
import torch

import strata.torch as st
from conftest import Reference, engine_config, quiet

transformers = pytest.importorskip("transformers")

STEPS, GAS = 12, 2


def gpt2():
    torch.manual_seed(3)
    cfg = transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=64, n_layer=4, n_head=4, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg)


def batches(n, seed=11):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        start, stride = torch.randint(0, 96, (4, 1), generator=g), torch.randint(1, 4, (4, 1), generator=g)
        yield (start + stride * torch.arange(24)) % 96


def run(trainer, ids_list):
    losses = []
    for ids in ids_list:
        out = trainer(ids, labels=ids)
        trainer.backward(out.loss)
        trainer.step()
        losses.append(out.loss.item())
    return losses


def offloaded_config(nvme_dir, budget):
    # params on NVMe, optimizer on NVMe; chunks of 32 KiB hold the largest weight (64 x 256 x 2 B).
    return engine_config("params + optimizer nvme", nvme_dir, gas=GAS, device_bytes=budget, chunk_bytes=32768)


def test_gpt2_offloaded_matches_torch_resumes_and_exports(tmp_path):
    model = gpt2()
    bit16 = sum(p.numel() for p in model.parameters()) * 2
    assert model.lm_head.weight is model.transformer.wte.weight, "tied embeddings"
    data = list(batches(STEPS * GAS))

    ref = Reference(gpt2(), gas=GAS)
    ref_losses = run(ref, data)

    budget = bit16 * 3 // 4  # working buffers and gradient buckets are 192 KiB of it
    nv = tmp_path / "nvme"
    nv.mkdir()
    eng = st.initialize(model, offloaded_config(nv, budget), log=quiet)
    assert not eng.resident
    names = eng.names
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names, "the tied param once"
    half = STEPS // 2 * GAS
    losses = run(eng, data[:half])
    ckpt = tmp_path / "ckpt"
    eng.save_checkpoint(ckpt)
    losses += run(eng, data[half:])
    stats = eng.get_stats()
    assert stats["device_peak_bytes"] <= budget < bit16
    assert stats["optimizer_steps"] == STEPS
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4]), f"the loss falls: {losses}"
    for a, b in zip(losses, ref_losses):
        assert abs(a - b) <= 2e-2 * abs(b), f"strata {losses} vs torch {ref_losses}"
    masters = eng.state_dict()

    # A fresh engine resumes from the checkpoint and continues exactly.
    nv2 = tmp_path / "nvme2"
    nv2.mkdir()
    again = st.initialize(gpt2(), offloaded_config(nv2, budget), log=quiet)
    again.load_checkpoint(ckpt)
    resumed = run(again, data[half:])
    assert resumed == losses[half:]
    for n in names:
        assert torch.equal(again.state_dict()[n], masters[n]), n
    again.close()

    # The export reloads with from_pretrained, with the trained masters' logits.
    out = tmp_path / "export"
    eng.export_safetensors(out)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(out)
    check = gpt2()
    check.load_state_dict({**masters, "lm_head.weight": masters["transformer.wte.weight"]}, strict=True)
    ids = data[0]
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, check(ids).logits)
    # ... and an engine initialised from the export starts from the trained values.
    nv3 = tmp_path / "nvme3"
    nv3.mkdir()
    from_file = st.initialize(gpt2(), offloaded_config(nv3, budget), init=out / "model.safetensors", log=quiet)
    for n in names:
        assert torch.equal(from_file.master(n), masters[n]), n
    from_file.close()

    # Evaluation passes fetch and release through the same hooks and change nothing.
    eng.eval()
    with torch.no_grad():
        logits = eng(ids).logits
    assert logits.shape == (4, 24, 96)
    assert eng.state_dict()["transformer.h.0.attn.c_attn.weight"].equal(masters["transformer.h.0.attn.c_attn.weight"])
    eng.close()
