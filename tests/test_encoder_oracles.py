"""Numerical oracles: the encoder rendered with an upstream model's knobs converts that model's saved checkpoint
with its own generated script (the pre-filled rules, unedited) and computes what the model computes: the same
masked-LM logits and hidden states within 1e-5 with eager and SDPA attention, on a batch padded on the right and on
the left."""

from __future__ import annotations

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM

from helpers import assert_same_logits_and_hidden_states, converted_with_generated_script

# RoBERTa's own numbering: <s> 0, <pad> 1, </s> 2, and positions from pad_token_id + 1 (514 rows for 512 tokens)
SMALL_CONFIG = {
    "vocab_size": 120,
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "max_position_embeddings": 34,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
# Each upstream model: the answer set that follows it and its classes
ORACLES = {"roberta": ("roberta_equivalent", RobertaConfig, RobertaForMaskedLM)}


@pytest.fixture(scope="module", params=list(ORACLES))
def model_pair(request, render, tmp_path_factory):
    """A random upstream model, and the rendered model its checkpoint converts into with the generated script."""
    answer_set, config_class, model_class = ORACLES[request.param]
    torch.manual_seed(0)
    original = model_class(config_class(**SMALL_CONFIG, attn_implementation="eager")).eval()
    return original, converted_with_generated_script(
        render, tmp_path_factory, request.param, answer_set, original, "MaskedLM"
    )


def padded_batch() -> dict[str, torch.Tensor]:
    """Three rows of 17 tokens: one full, one padded on the right, one on the left."""
    pad_token_id = SMALL_CONFIG["pad_token_id"]
    input_ids = torch.randint(3, SMALL_CONFIG["vocab_size"], (3, 17), generator=torch.Generator().manual_seed(1))
    input_ids[1, -5:] = pad_token_id
    input_ids[2, :4] = pad_token_id
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_token_id).long()}


def test_the_converted_state_dict_has_the_originals_weights(model_pair):
    original, rendered = model_pair
    original_values = sorted(round(t.double().sum().item(), 6) for t in original.state_dict().values())
    rendered_values = sorted(round(t.double().sum().item(), 6) for t in rendered.state_dict().values())
    # Names differ (the rendered model's own), every tensor comes across: position_ids buffers aside
    assert set(rendered_values) <= set(original_values)
    assert rendered.num_parameters() == original.num_parameters()


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
