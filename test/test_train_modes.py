"""Each training mode on the tiny model: the loss falls, only the trained adapter changes, and the
reward terms send gradient into the adapter weights."""

import pytest
import torch

from showme_model import adapters
from showme_model.model import ShowMeModel
from training.config import config_from_dict, load_config
from training.loops import Trainer
from training.synthetic import MovingSquares

torch.set_num_threads(1)


def make_config(mode, tmp_path, **overrides):
    values = {
        "mode": mode,
        "output_dir": str(tmp_path / mode),
        "batch_size": 2,
        "report_to": None,
        "dropout": False,
        "optim": {"lr": 2e-3},
        "data": {"synthetic": 4, "resolution": 32, "num_frames": 3},
        "structure": {"threshold": 1000},  # every sample gets the structure reward
        "motion": {"threshold": -1, "weight": 1.0},  # every sample gets the motion reward
    }
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(values)


def fixed_batch(mode, size=2):
    data = MovingSquares(size, 32, 3, pairs=mode == "stage1")
    items = [data[i] for i in range(size)]
    batch = {k: [it[k] for it in items] for k in items[0]}
    batch = {k: torch.stack(v) if isinstance(v[0], torch.Tensor) else v for k, v in batch.items()}
    batch["frame_stride"] = torch.tensor(batch["frame_stride"])
    batch["draw_id"] = torch.arange(size)  # same draws: same noise and timesteps every step
    return batch


@pytest.fixture(scope="module")
def manipulation_adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter") / "manipulation"
    torch.manual_seed(1)
    model = ShowMeModel.from_config_name("tiny")
    adapters.add_adapter(model, "manipulation")
    with torch.no_grad():  # a non-trivial stage-1 adapter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    adapters.save_adapter(model, "manipulation", folder)
    return folder


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["base", "stage1", "stage2"])
def test_loss_falls_and_only_the_trained_weights_change(mode, tmp_path, manipulation_adapter):
    extra = (
        {"model": {"manipulation_adapter": str(manipulation_adapter)}} if mode == "stage2" else {}
    )
    # The reward terms are checked below; here the plain noise-prediction loss must fall.
    trainer = Trainer(
        make_config(
            mode, tmp_path, structure={"enabled": False}, motion={"enabled": False}, **extra
        )
    )
    model = trainer.model
    before = snapshot(model)
    batch = fixed_batch(mode)
    losses = [trainer.step([batch])["loss"] for _ in range(12)]
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses

    after = snapshot(model)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    if mode == "base":
        assert all(n.startswith(("unet.", "image_projector.")) for n in trainable)
        assert not any("lora" in n for n in trainable)
    else:
        role = {"stage1": "manipulation", "stage2": "prediction"}[mode]
        assert all("lora" in n and f".{role}." in n for n in trainable)
    if mode == "stage2":  # the loaded stage-1 adapter is active, frozen and bit-identical
        frozen = [n for n in before if ".manipulation." in n]
        assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
        assert adapters.adapter_roles(model) == ["manipulation", "prediction"]


@pytest.mark.parametrize("mode", ["stage1", "stage2"])
def test_reward_gradient_reaches_the_adapter(mode, tmp_path, manipulation_adapter):
    extra = (
        {"model": {"manipulation_adapter": str(manipulation_adapter)}} if mode == "stage2" else {}
    )
    trainer = Trainer(make_config(mode, tmp_path, **extra))
    losses = trainer.objective(fixed_batch(mode))
    assert losses["reward_fraction"].item() == 1.0 and losses["reward"].item() > 0
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses["reward"], params, allow_unused=True)
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    lora_b = [g for n, g in zip(names, grads, strict=True) if "lora_B" in n and g is not None]
    assert lora_b and sum(g.abs().sum() for g in lora_b) > 0
    key = "structure_total" if mode == "stage1" else "motion_kl"
    assert losses[key].item() > 0


def test_no_reward_outside_the_timestep_range(tmp_path):
    trainer = Trainer(make_config("stage1", tmp_path, structure={"threshold": 0}))
    losses = trainer.objective(fixed_batch("stage1"))
    assert losses["reward_fraction"].item() == 0.0
    assert losses["loss"].item() == pytest.approx(losses["mse"].item())


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict({"structure": {"treshold": 100}})
    with pytest.raises(ValueError, match="mode"):
        config_from_dict({"mode": "stage3"})
    with pytest.raises(ValueError, match="num_frames"):
        config_from_dict({"mode": "stage2", "data": {"num_frames": 1}})


@pytest.mark.parametrize(
    "name", ["tiny-synthetic", "dynamicrafter256-stage1", "dynamicrafter256-stage2"]
)
def test_shipped_configs_parse(name):
    for mode in ("base", "stage1", "stage2"):
        assert load_config(f"training/configs/{name}.yaml", mode).mode == mode


def test_cached_text_tokens_equal_fresh_ones():
    from training.config import CfgDropoutConfig, MotionRewardConfig, StructureRewardConfig
    from training.objectives import TEXT_CACHE_SIZE, DiffusionObjective

    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    objective = DiffusionObjective(
        model,
        "base",
        0,
        CfgDropoutConfig(),
        StructureRewardConfig(enabled=False),
        MotionRewardConfig(enabled=False),
    )
    prompts = ["open the drawer", "close the drawer", "open the drawer"]
    with torch.no_grad():
        fresh = model.encode_text(prompts)
    torch.testing.assert_close(objective._encode_text(prompts), fresh)
    assert set(objective._text_cache) == {"open the drawer", "close the drawer"}
    torch.testing.assert_close(objective._encode_text(prompts[:1]), fresh[:1])
    many = [f"prompt {i}" for i in range(TEXT_CACHE_SIZE + 5)]
    for start in range(0, len(many), 64):
        objective._encode_text(many[start : start + 64])
    assert len(objective._text_cache) == TEXT_CACHE_SIZE
    assert "open the drawer" not in objective._text_cache and many[-1] in objective._text_cache
