"""Numerical oracle: the decoder rendered with Llama's knobs computes exactly what LlamaForCausalLM computes."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import import_rendered_package, load_answer_set

ORACLE_CONFIG = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}


@pytest.fixture(scope="module")
def model_pair(render, tmp_path_factory):
    """A random LlamaForCausalLM and the rendered model loaded with its state dict, keys unchanged."""
    answers = load_answer_set("llama_equivalent")
    project = render(answers, name="llama-oracle")
    package = import_rendered_package(project, answers["package_name"])

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**ORACLE_CONFIG, attn_implementation="eager")).eval()
    config_class = getattr(package, f"{answers['model_name']}Config")
    model_class = getattr(package, f"{answers['model_name']}ForCausalLM")
    rendered = model_class(config_class(**ORACLE_CONFIG, attn_implementation="eager")).eval()
    rendered.load_state_dict(llama.state_dict(), strict=True)
    return llama, rendered


def test_state_dict_keys_and_shapes_match(model_pair):
    llama, rendered = model_pair
    assert {name: tuple(t.shape) for name, t in rendered.state_dict().items()} == {
        name: tuple(t.shape) for name, t in llama.state_dict().items()
    }


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_match_llama_within_1e_5(model_pair, attn_implementation):
    llama, rendered = model_pair
    for model in model_pair:
        model.set_attn_implementation(attn_implementation)
    input_ids = torch.randint(3, ORACLE_CONFIG["vocab_size"], (3, 17), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :4] = 0  # a left-padded row

    with torch.no_grad():
        expected = llama(input_ids=input_ids, attention_mask=attention_mask).logits
        actual = rendered(input_ids=input_ids, attention_mask=attention_mask).logits

    real_tokens = attention_mask.bool()
    torch.testing.assert_close(actual[real_tokens], expected[real_tokens], rtol=0, atol=1e-5)


def test_greedy_generation_matches_llama_exactly(model_pair):
    llama, rendered = model_pair
    prompt = torch.randint(3, ORACLE_CONFIG["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(2))
    settings = {"max_new_tokens": 20, "min_new_tokens": 20, "do_sample": False}

    expected = llama.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
    actual = rendered.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)

    assert torch.equal(actual, expected)
