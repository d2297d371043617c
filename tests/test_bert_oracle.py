"""Numerical oracle: the encoder rendered with BERT's knobs computes what BertModel and BertForMaskedLM compute."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from helpers import (
    assert_packed_sequences_match_the_original,
    assert_same_logits_and_hidden_states,
    import_rendered_package,
    load_answer_set,
)

ORACLE_CONFIG = {
    "vocab_size": 120,
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "tie_word_embeddings": True,
    "attn_implementation": "eager",
}
# BERT's parameter names -> the rendered model's; only names change, never values.
BERT_TO_RENDERED = [
    (r"^bert\.", "model."),
    (r"\.embeddings\.LayerNorm\.", ".embeddings.layer_norm."),
    (r"\.encoder\.layer\.(\d+)\.attention\.self\.query\.", r".layers.\1.self_attn.q_proj."),
    (r"\.encoder\.layer\.(\d+)\.attention\.self\.key\.", r".layers.\1.self_attn.k_proj."),
    (r"\.encoder\.layer\.(\d+)\.attention\.self\.value\.", r".layers.\1.self_attn.v_proj."),
    (r"\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r".layers.\1.self_attn.o_proj."),
    (r"\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r".layers.\1.attention_layer_norm."),
    (r"\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r".layers.\1.mlp.up_proj."),
    (r"\.encoder\.layer\.(\d+)\.output\.dense\.", r".layers.\1.mlp.down_proj."),
    (r"\.encoder\.layer\.(\d+)\.output\.LayerNorm\.", r".layers.\1.mlp_layer_norm."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "lm_head.layer_norm."),
    (r"^cls\.predictions\.transform\.dense\.", "lm_head.dense."),
    (r"^cls\.predictions\.decoder\.", "lm_head.decoder."),
]


def convert_bert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for name, tensor in state_dict.items():
        if name == "cls.predictions.bias":
            continue  # the same tensor as cls.predictions.decoder.bias
        for pattern, replacement in BERT_TO_RENDERED:
            name = re.sub(pattern, replacement, name)
        converted[name] = tensor
    return converted


@pytest.fixture(scope="module")
def package(render):
    answers = load_answer_set("bert_equivalent")
    return import_rendered_package(render(answers, name="bert-oracle"), answers["package_name"])


def load_rendered(package, class_name: str, bert_model: torch.nn.Module) -> torch.nn.Module:
    config = package.OracleBertConfig(**ORACLE_CONFIG)
    rendered = getattr(package, class_name)(config).eval()
    missing, unexpected = rendered.load_state_dict(convert_bert_state_dict(bert_model.state_dict()), strict=False)
    assert (missing, unexpected) == ([], [])
    return rendered


def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, ORACLE_CONFIG["vocab_size"], (3, 13), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -5:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 7:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_masked_lm_logits_and_hidden_states_match_bert_within_1e_5(package, attn_implementation):
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(**ORACLE_CONFIG)).eval()
    rendered = load_rendered(package, "OracleBertForMaskedLM", bert)
    for model in (bert, rendered):
        model.set_attn_implementation(attn_implementation)

    batch = inputs()
    with torch.no_grad():
        expected = bert(**batch, output_hidden_states=True)
        actual = rendered(**batch, output_hidden_states=True)

    assert_same_logits_and_hidden_states(actual, expected, batch["attention_mask"])


def test_base_model_and_pooler_match_bert_model_within_1e_5(package):
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(**ORACLE_CONFIG, num_labels=3)).eval()
    rendered = package.OracleBertForSequenceClassification(
        package.OracleBertConfig(**ORACLE_CONFIG, num_labels=3)
    ).eval()
    rendered.load_state_dict(convert_bert_state_dict(bert.state_dict()), strict=True)

    batch = inputs()
    with torch.no_grad():
        expected_base = bert.bert(**batch)
        actual_base = rendered.model(**batch)
        expected_logits = bert(**batch).logits
        actual_logits = rendered(**batch).logits

    real_tokens = batch["attention_mask"].bool()
    torch.testing.assert_close(
        actual_base.last_hidden_state[real_tokens], expected_base.last_hidden_state[real_tokens], rtol=0, atol=1e-5
    )
    torch.testing.assert_close(actual_base.pooler_output, expected_base.pooler_output, rtol=0, atol=1e-5)
    torch.testing.assert_close(actual_logits, expected_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_sequences_attend_within_themselves_as_in_bert(package, attn_implementation):
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(**ORACLE_CONFIG)).eval()
    rendered = load_rendered(package, "OracleBertForMaskedLM", bert)
    for model in (bert, rendered):
        model.set_attn_implementation(attn_implementation)
    assert_packed_sequences_match_the_original(rendered, bert, [5, 8], ORACLE_CONFIG["vocab_size"])
