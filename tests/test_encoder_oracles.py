"""Numerical oracles: the encoder rendered with an upstream model's knobs converts that model's saved checkpoint
with its own generated script (the pre-filled rules, unedited) and computes what the model computes: the same
masked-LM logits and hidden states within 1e-5 with eager and SDPA attention, on a batch padded on the right and on
the left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import ModernBertConfig, ModernBertForMaskedLM, RobertaConfig, RobertaForMaskedLM

from helpers import (
    assert_packed_sequences_match_the_original,
    assert_same_logits_and_hidden_states,
    convert_cli,
    converted_with_generated_script,
    generated_modules,
    load_answer_set,
)

# Every model numbers as RoBERTa does: <s> 0, <pad> 1, </s> 2
VOCAB_SIZE = 120
PAD_TOKEN_ID = 1
SMALL_SIZES = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "pad_token_id": PAD_TOKEN_ID,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
# Each upstream model: the answer set that follows it, its classes and its small config
ORACLES = {
    # Positions from pad_token_id + 1 (34 rows for 32 tokens)
    "roberta": (
        "roberta_equivalent",
        RobertaConfig,
        RobertaForMaskedLM,
        {
            **SMALL_SIZES,
            "num_hidden_layers": 3,
            "max_position_embeddings": 34,
            "type_vocab_size": 1,
            "layer_norm_eps": 1e-5,
        },
    ),
    # Layers full, sliding, sliding, full; a window of 3 tokens on each side of the 17-token rows
    "modernbert": (
        "modernbert_equivalent",
        ModernBertConfig,
        ModernBertForMaskedLM,
        {
            **SMALL_SIZES,
            "num_hidden_layers": 4,
            "max_position_embeddings": 64,
            "local_attention": 6,
            "cls_token_id": 0,
            "sep_token_id": 2,
        },
    ),
}


@pytest.fixture(scope="module", params=list(ORACLES))
def model_pair(request, render, tmp_path_factory):
    """A random upstream model, its norms' weights moved off one so that a misplaced norm shows, and the rendered
    model its checkpoint converts into with the generated script."""
    answer_set, config_class, model_class, small_config = ORACLES[request.param]
    torch.manual_seed(0)
    original = model_class(config_class(**small_config, attn_implementation="eager")).eval()
    with torch.no_grad():
        for name, parameter in original.named_parameters():
            if "norm" in name.lower():
                parameter.add_(0.1 * torch.randn_like(parameter))
    return original, converted_with_generated_script(
        render, tmp_path_factory, request.param, answer_set, original, "MaskedLM"
    )


def padded_batch() -> dict[str, torch.Tensor]:
    """Three rows of 17 tokens: one full, one padded on the right, one on the left."""
    pad_token_id = PAD_TOKEN_ID
    input_ids = torch.randint(3, VOCAB_SIZE, (3, 17), generator=torch.Generator().manual_seed(1))
    input_ids[1, -5:] = pad_token_id
    input_ids[2, :4] = pad_token_id
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_token_id).long()}


def test_the_converted_model_has_the_originals_weights(model_pair):
    original, rendered = model_pair
    # Names and shapes differ (fused projections are split): every value comes across, once
    original_values, rendered_values = (
        torch.cat([parameter.detach().flatten() for parameter in model.parameters()]).sort().values
        for model in model_pair
    )
    assert torch.equal(rendered_values, original_values)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_and_hidden_states_match_the_original_within_1e_5(model_pair, attn_implementation):
    original, rendered = model_pair
    for model in model_pair:
        model.set_attn_implementation(attn_implementation)
    inputs = padded_batch()

    with torch.no_grad():
        expected = original(**inputs, output_hidden_states=True)
        actual = rendered(**inputs, output_hidden_states=True)

    assert_same_logits_and_hidden_states(actual, expected, inputs["attention_mask"])


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_sequences_attend_within_themselves_as_in_roberta(model_pair, attn_implementation):
    original, rendered = model_pair
    if not isinstance(original, RobertaForMaskedLM):
        pytest.skip("ModernBERT's masks do not read position ids")
    for model in model_pair:
        model.set_attn_implementation(attn_implementation)
    # RoBERTa's positions start after pad_token_id
    assert_packed_sequences_match_the_original(
        rendered, original, [6, 11], VOCAB_SIZE, first_position=PAD_TOKEN_ID + 1
    )


# ModernBERT's configs on the Hub, saved before Transformers 5, give its layer pattern and rotary thetas as numbers
HUB_MODERNBERT_KEYS = {"global_attn_every_n_layers": 3, "global_rope_theta": 160_000.0, "local_rope_theta": 10_000.0}


def saved_with_hub_config(original, folder: Path, **changes) -> Path:
    """`original` saved, its config.json rewritten in the form of ModernBERT's Hub configs, with `changes`."""
    original.save_pretrained(folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    del config["layer_types"], config["rope_parameters"]
    config_file.write_text(json.dumps({**config, **HUB_MODERNBERT_KEYS, **changes}))
    return folder


def test_a_modernbert_hub_config_converts_to_the_same_model_and_another_pattern_is_refused(render, tmp_path, capsys):
    answer_set, config_class, model_class, small_config = ORACLES["modernbert"]
    torch.manual_seed(0)
    original = model_class(config_class(**small_config, attn_implementation="eager")).eval()
    package, convert, _ = generated_modules(render, answer_set)

    checkpoint = saved_with_hub_config(original, tmp_path / "hub")
    assert convert_cli(convert, checkpoint, tmp_path / "converted") == 0
    rendered_class = getattr(package, f"{load_answer_set(answer_set)['model_name']}ForMaskedLM")
    rendered = rendered_class.from_pretrained(tmp_path / "converted", attn_implementation="eager").eval()
    inputs = padded_batch()
    with torch.no_grad():
        assert_same_logits_and_hidden_states(
            rendered(**inputs, output_hidden_states=True),
            original(**inputs, output_hidden_states=True),
            inputs["attention_mask"],
        )

    other_pattern = saved_with_hub_config(original, tmp_path / "every-other", global_attn_every_n_layers=2)
    capsys.readouterr()
    assert convert_cli(convert, other_pattern, tmp_path / "refused") != 0
    assert "global_attn_every_n_layers=2" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
