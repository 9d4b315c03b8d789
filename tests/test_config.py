import pytest

from pgolf.config import Config, ConfigError, apply_overrides
from pgolf.recipes import RECIPES, get_recipe


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_validate_and_roundtrip(name):
    c = get_recipe(name)
    assert Config.from_dict(c.to_dict()) == c


def test_overrides_are_typed():
    c = apply_overrides(get_recipe("baseline"), ["model.num_layers=11", "model.smear_gate=true",
                                                 "optim.matrix_lr=0.02", "quant.keep_fp16=tok_emb,blocks.8.attn.c_k",
                                                 "train.batch_tokens=786_432", "train.iterations=1e4"])
    assert c.model.num_layers == 11 and c.model.smear_gate is True and c.optim.matrix_lr == 0.02
    assert c.quant.keep_fp16 == ("tok_emb", "blocks.8.attn.c_k")
    assert c.train.batch_tokens == 786432 and c.train.iterations == 10000


@pytest.mark.parametrize("bad,msg", [
    ("model.num_layer=3", "did you mean model.num_layers"),
    ("nosuch=1", "unknown config key"),
    ("model.num_layers=abc", "expected a int"),
    ("model.smear_gate=maybe", "expected a bool"),
    ("model.num_heads=7", "divisible"),
    ("eval.final=sliding", "sliding_stride"),
    ("quant.mlp=int9", "not in"),
])
def test_bad_overrides_are_clear(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(get_recipe("baseline"), [bad])


def test_unknown_keys_rejected_from_dict():
    d = get_recipe("baseline").to_dict()
    d["model"]["wat"] = 1
    with pytest.raises(ConfigError, match="wat"):
        Config.from_dict(d)


def test_grad_accum_is_derived():
    t = get_recipe("baseline").train
    assert t.grad_accum(1) == 8 and t.grad_accum(2) == 4 and t.grad_accum(8) == 1
    with pytest.raises(ConfigError, match="divisible"):
        t.grad_accum(3)
