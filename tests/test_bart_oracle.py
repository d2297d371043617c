"""Numerical oracle: the encoder-decoder rendered with BART's knobs computes what BartForConditionalGeneration does."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from helpers import import_rendered_package, load_answer_set

SIZES = {"vocab_size": 120, "max_position_embeddings": 64, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
BART_CONFIG = BartConfig(
    **SIZES,
    d_model=64,
    encoder_layers=2,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=96,
    decoder_ffn_dim=96,
    decoder_start_token_id=2,
    attn_implementation="eager",
)
RENDERED_CONFIG = {
    **SIZES,
    "hidden_size": 64,
    "encoder_layers": 2,
    "decoder_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "decoder_start_token_id": 2,
    "attn_implementation": "eager",
}
# BART's parameter names -> the rendered model's; only names change, never values.
BART_TO_RENDERED = [
    (r"\.self_attn\.out_proj\.", ".self_attn.o_proj."),
    (r"\.encoder_attn\.out_proj\.", ".cross_attn.o_proj."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.self_attn_layer_norm\.", ".attention_layer_norm."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attention_layer_norm."),
    (r"\.fc1\.", ".mlp.up_proj."),
    (r"\.fc2\.", ".mlp.down_proj."),
    (r"\.final_layer_norm\.", ".mlp_layer_norm."),
    (r"\.layernorm_embedding\.", ".embedding_layer_norm."),
]


def convert_bart_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for name, tensor in state_dict.items():
        if name == "final_logits_bias":
            assert not tensor.any(), "a random BART has a zero final_logits_bias, which the rendered model omits"
            continue
        if name.endswith("embed_positions.weight"):
            tensor = tensor[2:]  # BART's learned positions start at row 2 (its `offset`)
        for pattern, replacement in BART_TO_RENDERED:
            name = re.sub(pattern, replacement, name)
        converted[name] = tensor
    return converted


@pytest.fixture(scope="module")
def model_pair(render):
    answers = load_answer_set("bart_equivalent")
    package = import_rendered_package(render(answers, name="bart-oracle"), answers["package_name"])
    torch.manual_seed(0)
    bart = BartForConditionalGeneration(BART_CONFIG).eval()
    rendered = package.OracleBartForConditionalGeneration(package.OracleBartConfig(**RENDERED_CONFIG)).eval()
    rendered.load_state_dict(convert_bart_state_dict(bart.state_dict()), strict=True)
    return bart, rendered


def source_batch() -> dict[str, torch.Tensor]:
    input_ids = torch.randint(3, SIZES["vocab_size"], (3, 11), generator=torch.Generator().manual_seed(1))
    input_ids[:, -1] = SIZES["eos_token_id"]
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, -4:] = SIZES["pad_token_id"]
    attention_mask[1, -4:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_match_bart_within_1e_5(model_pair, attn_implementation):
    for model in model_pair:
        model.set_attn_implementation(attn_implementation)
    bart, rendered = model_pair
    batch = source_batch()
    labels = torch.randint(3, SIZES["vocab_size"], (3, 9), generator=torch.Generator().manual_seed(2))

    with torch.no_grad():
        expected = bart(**batch, labels=labels, output_hidden_states=True)
        actual = rendered(**batch, labels=labels, output_hidden_states=True)

    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=0, atol=1e-5)
    real_tokens = batch["attention_mask"].bool()
    torch.testing.assert_close(
        actual.encoder_last_hidden_state[real_tokens],
        expected.encoder_last_hidden_state[real_tokens],
        atol=1e-5,
        rtol=0,
    )


def test_greedy_generation_matches_bart_exactly(model_pair):
    bart, rendered = model_pair
    for model in model_pair:
        model.set_attn_implementation("sdpa")
    batch = source_batch()
    # The same decoding rules for both: BART's config also forces EOS at max_length
    settings = {"max_new_tokens": 15, "min_new_tokens": 15, "do_sample": False, "num_beams": 1}
    settings |= {"forced_eos_token_id": None, "forced_bos_token_id": None, "no_repeat_ngram_size": 0}

    expected = bart.generate(**batch, **settings)
    actual = rendered.generate(**batch, **settings)

    assert torch.equal(actual, expected)
