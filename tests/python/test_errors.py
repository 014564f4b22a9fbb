"""Bad use of strata.torch raises Python exceptions that carry strata_last_error() and name the
problem: an unknown config key, a plan that does not fit, step without backward, a model changed
after initialize, init values for names the model does not have, the engine used after close."""
import pytest
import torch

import strata
import strata.torch as st
from conftest import engine_config, quiet


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))


def test_an_unknown_config_key_is_named(nvme_dir):
    cfg = engine_config("device", nvme_dir)
    cfg["zero_optimization"]["offload_optimzer"] = {"device": "cpu"}
    with pytest.raises(strata.InvalidArgument, match="zero_optimization.offload_optimzer: unknown key") as e:
        st.initialize(model(), cfg, log=quiet)
    assert e.value.code == 1 and "strata_engine_create" in e.value.message


def test_a_plan_that_does_not_fit_says_what_is_short(nvme_dir):
    with pytest.raises(strata.OutOfMemory, match="the model does not fit: the device needs"):
        st.initialize(model(), engine_config("device", nvme_dir, device_bytes=4096), log=quiet)


def test_step_without_backward_and_backward_in_eval_are_refused(nvme_dir):
    eng = st.initialize(model(), engine_config("device", nvme_dir), log=quiet)
    x = torch.randn(4, 8).to(torch.bfloat16)
    with pytest.raises(strata.FailedPrecondition, match=r"step\(\) without backward\(\)"):
        eng.step()
    eng(x)
    with pytest.raises(strata.FailedPrecondition, match=r"step\(\) without backward\(\)"):
        eng.step()
    eng.backward(eng(x).float().sum())
    eng.step()
    eng.eval()
    with pytest.raises(strata.FailedPrecondition, match="backward in eval mode"):
        eng.backward(eng(x).float().sum())
    eng.close()


def test_a_model_changed_after_initialize_is_refused(nvme_dir):
    m = model()
    eng = st.initialize(m, engine_config("device", nvme_dir), log=quiet)
    m.add_module("extra", torch.nn.Linear(2, 2))
    with pytest.raises(strata.FailedPrecondition, match=r"the model's parameters changed after initialize \(extra.bias"):
        eng(torch.randn(4, 8).to(torch.bfloat16))
    eng.close()


def test_init_values_for_unknown_names_or_shapes_are_refused(nvme_dir):
    with pytest.raises(strata.InvalidArgument, match="names the model does not have: 9.weight"):
        st.initialize(model(), engine_config("device", nvme_dir), init={"9.weight": torch.zeros(2, 2)}, log=quiet)
    with pytest.raises(strata.InvalidArgument, match=r"init value of '0.weight' has shape \[2, 2\]"):
        st.initialize(model(), engine_config("device", nvme_dir), init={"0.weight": torch.zeros(2, 2)}, log=quiet)


def test_the_engine_after_close_and_a_bogus_export_target(nvme_dir, tmp_path):
    eng = st.initialize(model(), engine_config("device", nvme_dir), log=quiet)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(strata.AlreadyExists, match="holds files strata did not write"):
        eng.export_safetensors(mine)
    assert (mine / "notes.txt").read_text() == "keep"
    eng.close()
    with pytest.raises(strata.FailedPrecondition, match="the engine was destroyed"):
        eng.engine.step()
