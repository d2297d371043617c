"""Generated tokenizers: every kind in every family, parity with Transformers' own, clear errors on bad files."""

from __future__ import annotations

import importlib
import json

import pytest
import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer

from helpers import FAMILY_KNOBS, import_rendered_package, load_answer_set, ruff, run_generated_tests

TOKENIZER_KINDS = ["none", "reuse", "bpe", "wordpiece", "unigram"]
# Accents, CJK, Cyrillic, punctuation, emoji, whitespace runs and tabs
MULTILINGUAL_SAMPLE = [
    "Café naïve résumé: déjà vu, über-cool façade!",
    "東京は日本の首都です。北京是中国的首都。",
    "Привет, мир! Как дела?",
    "  multiple   spaces\tand\ttabs  between words ",
    "don't stop-believing... (really?) [yes] {no} <maybe> 42% $3.14 #tag @user",
    "Emoji 😀🚀 and symbols © ® ™ ½ and ß, İstanbul, ΑΘΗΝΑ",
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.mark.parametrize("family", list(FAMILY_KNOBS))
@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_every_tokenizer_kind_renders_in_every_family_and_passes_its_tests(render, family, kind):
    project = render({"family": family, "tokenizer": kind, "model_name": "TokenizerMatrix"}, name=f"{family}-{kind}")
    assert ruff("check", "--no-cache", str(project)).returncode == 0
    assert ruff("format", "--check", "--no-cache", str(project)).returncode == 0
    tokenization_files = sorted(project.glob("src/*/tokenization_*.py"))
    tokenizer_tests = sorted(project.glob("tests/test_tokenization_*.py"))
    assert len(tokenization_files) == (kind in {"bpe", "wordpiece", "unigram"})
    assert len(tokenizer_tests) == (kind != "none")
    if tokenizer_tests:
        result = run_generated_tests(project, str(tokenizer_tests[0].relative_to(project)))
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def rendered_tokenizer_class(render, answer_set: str):
    project = render(load_answer_set(answer_set), name=answer_set)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    package = import_rendered_package(project, answers["package_name"])
    return next(getattr(package, name) for name in package.__all__ if name.endswith("Tokenizer")), answers


def train(backend: Tokenizer, trainer) -> Tokenizer:
    backend.train_from_iterator(MULTILINGUAL_SAMPLE, trainer)
    return backend


def test_wordpiece_gives_the_ids_of_bert_tokenizer_on_a_multilingual_sample(render, tmp_path):
    tokenizer_class, _ = rendered_tokenizer_class(render, "bert_equivalent")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    train(backend, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special)).model.save(str(tmp_path))

    generated = tokenizer_class.from_pretrained(tmp_path)
    reference = BertTokenizer.from_pretrained(tmp_path)

    unseen = ["Ünïcödé wörds nobody trained on", "中文和日本語が混ざる"]
    for text in MULTILINGUAL_SAMPLE + unseen:
        assert generated(text)["input_ids"] == reference(text)["input_ids"], text
    pair = generated(MULTILINGUAL_SAMPLE[0], MULTILINGUAL_SAMPLE[2])
    assert pair["input_ids"] == reference(MULTILINGUAL_SAMPLE[0], MULTILINGUAL_SAMPLE[2])["input_ids"]
    assert pair["token_type_ids"] == reference(MULTILINGUAL_SAMPLE[0], MULTILINGUAL_SAMPLE[2])["token_type_ids"]


def test_byte_level_bpe_gives_the_ids_of_gpt2_tokenizer_from_the_same_files(render, tmp_path):
    tokenizer_class, _ = rendered_tokenizer_class(render, "gpt2_like")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    train(backend, trainer).model.save(str(tmp_path))

    generated = tokenizer_class.from_pretrained(tmp_path)
    reference = GPT2Tokenizer.from_pretrained(tmp_path)

    unseen = ["Ünïcödé wörds nobody trained on", "中文和日本語が混ざる 🤖"]
    for text in MULTILINGUAL_SAMPLE + unseen:
        # GPT-2 adds no special tokens; the generated decoder tokenizer starts with BOS
        ids = generated(text, add_special_tokens=False)["input_ids"]
        assert ids == reference(text)["input_ids"], text
        assert generated.decode(ids) == text


@pytest.mark.parametrize(
    ("answer_set", "file_name", "content", "message"),
    [
        ("bert_equivalent", "vocab.txt", b"\xff\xfe broken", "cannot read the vocabulary file"),
        ("bert_equivalent", "vocab.txt", "[PAD]\n[UNK]\nword\nword\n", "line 4: the token 'word' appears twice"),
        ("gpt2_like", "vocab.json", "{not json", "is not valid JSON"),
        ("gpt2_like", "vocab.json", '["a", "b"]', "must map each token to an integer id"),
        ("gpt2_like", "merges.txt", "#version: 0.2\na b\nabc\n", "line 3: a merge is two symbols"),
    ],
    ids=["vocab-txt-not-utf8", "vocab-txt-duplicate", "vocab-json-syntax", "vocab-json-shape", "merges-line"],
)
def test_a_malformed_vocabulary_file_is_named_with_what_is_wrong(
    render, tmp_path, answer_set, file_name, content, message
):
    tokenizer_class, _ = rendered_tokenizer_class(render, answer_set)
    if answer_set == "gpt2_like":  # a valid pair, then one file broken
        (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
        (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    path = tmp_path / file_name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    with pytest.raises(ValueError, match=message) as error:
        tokenizer_class.from_pretrained(tmp_path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("answer_set", ["bert_equivalent", "gpt2_like"])
def test_a_folder_without_tokenizer_files_is_an_error(render, tmp_path, answer_set):
    tokenizer_class, _ = rendered_tokenizer_class(render, answer_set)
    with pytest.raises(ValueError, match=f"{tmp_path} holds none of the tokenizer files"):
        tokenizer_class.from_pretrained(tmp_path)


def test_the_conversion_script_saves_the_original_tokenizer_beside_the_weights(render, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    tokenizer_class, answers = rendered_tokenizer_class(render, "bert_equivalent")
    convert = importlib.import_module(f"{answers['package_name']}.convert_{answers['model_type']}_checkpoint")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (tmp_path / "original").mkdir()
    train(backend, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special)).model.save(
        str(tmp_path / "original")
    )
    bert = BertForMaskedLM(
        BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    )
    bert.save_pretrained(tmp_path / "original")

    args = ["--checkpoint", tmp_path / "original", "--config", tmp_path / "original" / "config.json"]
    status = convert.main(
        [str(arg) for arg in [*args, "--tokenizer", tmp_path / "original", "--output", tmp_path / "out"]]
    )

    assert status == 0
    loaded = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert type(loaded) is tokenizer_class
    reference = BertTokenizer.from_pretrained(tmp_path / "original")
    for text in MULTILINGUAL_SAMPLE:
        assert loaded(text)["input_ids"] == reference(text)["input_ids"]
