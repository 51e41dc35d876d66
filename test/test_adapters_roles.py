"""LoRA adapters by role: save/load, freezing, activation per call, merging."""

import pytest
import torch

from showme_model import adapters
from showme_model.model import ShowMeModel


def _randomise(model, role, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if f".{role}." in name and ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def _model(seed=0, ranks=(4, 2)):
    torch.manual_seed(seed)
    model = ShowMeModel.from_config_name("tiny").eval()
    adapters.add_adapter(model, "manipulation", rank=ranks[0])
    adapters.add_adapter(model, "prediction", rank=ranks[1])
    _randomise(model, "manipulation", 1)
    _randomise(model, "prediction", 2)
    return model


def _forward(model, temporal=True):
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 8, 2, 8, 8, generator=generator)
    tokens = torch.randn(1, 12, 48, generator=generator)
    text = torch.randn(1, 77, 32, generator=generator)
    context = torch.cat([text, model.image_projector(tokens)], 1)
    return model.unet(sample, torch.tensor([400]), context, temporal=temporal)


@pytest.fixture(scope="module")
def model():
    return _model()


def test_roles_target_the_expected_modules(model):
    targets = adapters.target_modules(model, "manipulation")
    assert set(targets) == {"unet", "image_projector"}
    assert targets["image_projector"] == [
        "layers.0.attn.to_q",
        "layers.0.attn.to_k",
        "layers.0.attn.to_v",
    ]
    prediction = adapters.target_modules(model, "prediction")
    assert set(prediction) == {"unet"}
    assert set(targets["unet"]) < set(prediction["unet"])
    assert adapters.adapter_roles(model) == ["manipulation", "prediction"]


def test_save_load_round_trip_is_exact(model, tmp_path):
    adapters.save_adapter(model, "manipulation", tmp_path / "m")
    adapters.save_adapter(model, "prediction", tmp_path / "p")
    fresh = ShowMeModel.from_config_name("tiny").eval()
    fresh.load_state_dict(
        {k: v for k, v in model.state_dict().items() if ".lora_" not in k}, strict=False
    )
    for name in ("unet", "image_projector"):
        base = adapters.base_state_dict(getattr(model, name))
        getattr(fresh, name).load_state_dict(base)
    assert adapters.load_adapter(fresh, tmp_path / "m") == "manipulation"
    assert adapters.load_adapter(fresh, tmp_path / "p") == "prediction"
    original = {k: v for k, v in model.state_dict().items() if ".lora_" in k}
    loaded = {k: v for k, v in fresh.state_dict().items() if ".lora_" in k}
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    with torch.no_grad():
        assert torch.equal(_forward(model), _forward(fresh))


def test_load_rejects_mismatched_adapter(model, tmp_path):
    adapters.save_adapter(model, "manipulation", tmp_path / "m")
    other = ShowMeModel.from_config_name("tiny")
    adapters.add_adapter(other, "manipulation", rank=8)
    with pytest.raises(adapters.AdapterError):
        adapters.load_adapter(other, tmp_path / "m")
    with pytest.raises(adapters.AdapterError, match="not an adapter folder"):
        adapters.load_adapter(other, tmp_path)


def test_only_the_trained_adapter_changes_in_an_optimizer_step():
    model = _model(seed=5)
    trainable = adapters.set_trainable_adapter(model, "prediction")
    adapters.set_active_adapters(model, adapters.VIDEO_MODE_ROLES)  # peft would unfreeze here
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in trainable}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    _forward(model).square().mean().backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k and ".prediction." in k for k in changed)
    assert all(".prediction." in k for k in changed)
    frozen = [k for k in before if ".manipulation." in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_active_adapters_per_call(model):
    with torch.no_grad():
        with adapters.active_adapters(model, adapters.IMAGE_MODE_ROLES):
            image_mode = _forward(model, temporal=False)
            _randomise(model, "prediction", 9)
            assert torch.equal(image_mode, _forward(model, temporal=False))
        with adapters.active_adapters(model, []):
            base = _forward(model, temporal=False)
    assert not torch.allclose(image_mode, base)
    assert adapters._active_roles(model) == ["manipulation", "prediction"]


def test_merged_and_unmerged_give_the_same_output(model):
    with torch.no_grad():
        unmerged = _forward(model)
        adapters.merge_adapters(model)
        merged = _forward(model)
        with pytest.raises(adapters.AdapterError, match="merged"):
            adapters.base_state_dict(model.unet)
        adapters.unmerge_adapters(model)
        again = _forward(model)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again, unmerged, atol=1e-5, rtol=1e-4)
