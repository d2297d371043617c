"""Numerical oracles: the decoder rendered with an upstream model's knobs converts that model's saved checkpoint with
its own generated script (the pre-filled rules, unedited) and computes what the model computes: the same logits
within 1e-5 with eager and SDPA attention on a left-padded batch, and the same greedy generation."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from helpers import converted_with_generated_script

SMALL_CONFIG = {
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
# A key of SMALL_CONFIG that an upstream config lacks
ABSENT = object()
# Each upstream model: the answer set that follows it, its classes, and what its small config changes. Windows are
# shorter than the inputs and the generated text, so that they change the results.
ORACLES = {
    "llama": ("llama_equivalent", LlamaConfig, LlamaForCausalLM, {}),
    "mistral": ("mistral_equivalent", MistralConfig, MistralForCausalLM, {"sliding_window": 5}),
    "qwen2": ("qwen2_equivalent", Qwen2Config, Qwen2ForCausalLM, {}),
    "gemma": (
        "gemma_equivalent",
        GemmaConfig,
        GemmaForCausalLM,
        {"head_dim": 16, "num_key_value_heads": 8, "hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True},
    ),
    # Caps near the small model's scores and logits, so that they change the results; a query_pre_attn_scalar
    # that differs from head_dim
    "gemma2": (
        "gemma2_equivalent",
        Gemma2Config,
        Gemma2ForCausalLM,
        {
            **{"head_dim": 16, "num_key_value_heads": 4, "hidden_activation": "gelu_pytorch_tanh"},
            **{"query_pre_attn_scalar": 12, "sliding_window": 5, "tie_word_embeddings": True},
            **{"attn_logit_softcapping": 0.05, "final_logit_softcapping": 0.5},
        },
    ),
    "olmo2": ("olmo2_equivalent", Olmo2Config, Olmo2ForCausalLM, {}),
    # Qwen3's own layer pattern (full below max_window_layers, sliding above), heads wider than hidden / heads
    "qwen3": (
        "qwen3_equivalent",
        Qwen3Config,
        Qwen3ForCausalLM,
        {"head_dim": 12, "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1},
    ),
    # Multi-head attention fused head by head, a quarter of each head rotating, attention and MLP in parallel
    "gpt_neox": (
        "gpt_neox_equivalent",
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        {
            **{"num_key_value_heads": ABSENT, "rms_norm_eps": ABSENT, "layer_norm_eps": 1e-5},
            **{"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}},
        },
    ),
    "mixtral": (
        "mixtral_equivalent",
        MixtralConfig,
        MixtralForCausalLM,
        {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 5},
    ),
    # Unnormalized routing weights (its default), and a dense layer among the sparse ones
    "qwen2_moe": (
        "qwen2_moe_equivalent",
        Qwen2MoeConfig,
        Qwen2MoeForCausalLM,
        {
            **{"num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": False, "mlp_only_layers": [1]},
            **{"moe_intermediate_size": 32, "shared_expert_intermediate_size": 48},
        },
    ),
}

# Upstream models whose modules Transformers names otherwise than Llama (GPT-NeoX: gpt_neox.embed_in, a fused
# query_key_value), so that the conversion renames them
NAMED_APART = {"gpt_neox"}


@pytest.fixture(scope="module", params=list(ORACLES))
def model_pair(request, render, tmp_path_factory):
    """A random upstream model, and the rendered model its checkpoint converts into with the generated script."""
    answer_set, config_class, model_class, changes = ORACLES[request.param]
    torch.manual_seed(0)
    values = {key: value for key, value in {**SMALL_CONFIG, **changes}.items() if value is not ABSENT}
    original = model_class(config_class(**values, attn_implementation="eager")).eval()
    return original, converted_with_generated_script(
        render, tmp_path_factory, request.param, answer_set, original, "CausalLM"
    )


def test_the_converted_state_dict_has_the_originals_keys_and_shapes(request, model_pair):
    original, rendered = model_pair
    if request.node.callspec.params["model_pair"] in NAMED_APART:
        # As many values, fused otherwise
        assert rendered.num_parameters() == original.num_parameters()
        return
    assert {name: tuple(t.shape) for name, t in rendered.state_dict().items()} == {
        name: tuple(t.shape) for name, t in original.state_dict().items()
    }


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_and_loss_match_the_original_within_1e_5(model_pair, attn_implementation):
    original, rendered = model_pair
    if not original._supports_sdpa and attn_implementation == "sdpa":
        pytest.skip(f"{type(original).__name__} has no SDPA attention (it soft-caps the scores)")
    for model in model_pair:
        model.set_attn_implementation(attn_implementation)
    input_ids = torch.randint(3, SMALL_CONFIG["vocab_size"], (3, 17), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :4] = 0  # a left-padded row
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": input_ids.masked_fill(~attention_mask.bool(), -100),
    }
    mixture_of_experts = hasattr(original.config, "num_experts_per_tok")
    if mixture_of_experts:
        inputs["output_router_logits"] = True  # the loss then includes the load-balancing loss

    with torch.no_grad():
        expected, actual = original(**inputs), rendered(**inputs)

    real_tokens = attention_mask.bool()
    torch.testing.assert_close(actual.logits[real_tokens], expected.logits[real_tokens], rtol=0, atol=1e-5)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=0, atol=1e-5)
    if mixture_of_experts:
        assert expected.aux_loss > 0
        torch.testing.assert_close(actual.aux_loss, expected.aux_loss, rtol=0, atol=1e-6)


def test_greedy_generation_matches_the_original_exactly(model_pair):
    original, rendered = model_pair
    prompt = torch.randint(3, SMALL_CONFIG["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(2))
    settings = {"max_new_tokens": 20, "min_new_tokens": 20, "do_sample": False}

    expected = original.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
    actual = rendered.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)

    assert torch.equal(actual, expected)
