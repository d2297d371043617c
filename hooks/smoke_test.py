"""Build every generated model with a tiny config, run one forward pass each, then save and reload it; models that
generate also generate greedily with and without the cache, which must give the same tokens.

Runs in the user's own interpreter (`python` on PATH), which is the one that has torch and Transformers:
    python smoke_test.py --src DST/src --package PACKAGE --tiny-config '{"hidden_size": 32, ...}' \
        --input-ranks '{"XForMultipleChoice": 3}'
Exit status: 0 passed, 1 failed (traceback printed), 3 skipped because torch or Transformers is missing,
7 passed but the installed Transformers registers the package's model_type itself.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator

FAILED, SKIPPED, MODEL_TYPE_TAKEN = 1, 3, 7
BATCH_SIZE, SEQ_LENGTH = 2, 7
NEW_TOKENS = 6


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """Print one line per step, with its time; a failing step prints its line before the error."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        print(f"  FAILED  {description}", flush=True)
        raise
    print(f"  ok      {description} ({time.perf_counter() - started:.2f} s)", flush=True)


class GenerationMismatch(AssertionError):
    pass


def check_cached_generation(model, input_ids, attention_mask) -> None:
    """Greedy generation with the cache must pick the tokens generation without it picks: a forward pass that
    misses the cache it is given (an argument named as in another Transformers release) breaks this, not a forward."""
    import torch

    settings = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    with torch.no_grad():
        with_cache = model.generate(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **settings)
        without_cache = model.generate(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **settings)
    if not torch.equal(with_cache, without_cache):
        raise GenerationMismatch(
            "greedy generation with the cache differs from generation without it:\n"
            f"    with cache:    {with_cache.tolist()}\n    without cache: {without_cache.tolist()}"
        )


def run(package_name: str, tiny_config: dict, input_ranks: dict[str, int]) -> bool:
    """Every step of the smoke test; returns whether the installed Transformers registers the model type itself."""
    import torch
    import transformers
    from transformers import PreTrainedModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    with step(f"import {package_name}"):
        package = importlib.import_module(package_name)
    config_class = next(getattr(package, name) for name in package.__all__ if name.endswith("Config"))
    # The base model first, then the heads: a checkout's lazy module lists its names in no set order
    model_classes = sorted(
        (
            getattr(package, name)
            for name in package.__all__
            if isinstance(getattr(package, name), type)
            and issubclass(getattr(package, name), PreTrainedModel)
            and not name.endswith("PreTrainedModel")
        ),
        key=lambda model_class: ("For" in model_class.__name__, model_class.__name__),
    )
    model_type = config_class.model_type
    type_taken = model_type in CONFIG_MAPPING_NAMES and not package_name.startswith("transformers.")
    if type_taken:
        print(
            f"  problem model_type {model_type!r} is also registered by transformers {transformers.__version__} "
            f"({CONFIG_MAPPING_NAMES[model_type]}), which importing {package_name} replaces in the Auto classes: "
            "generate the model again with another model_type (-d model_type=...)"
        )

    with step(f"{config_class.__name__}(**tiny config)"):
        config = config_class(**tiny_config)
    for model_class in model_classes:
        # Rank 3 is (batch, choices, sequence), as multiple-choice heads read; every other model (batch, sequence)
        rank = input_ranks.get(model_class.__name__, 2)
        shape = (BATCH_SIZE, *[2] * (rank - 2), SEQ_LENGTH)
        input_ids = torch.randint(3, config.vocab_size, shape, generator=torch.Generator().manual_seed(0))
        if isinstance(getattr(config, "eos_token_id", None), int):
            input_ids[..., -1] = config.eos_token_id  # encoder-decoder classifiers read the EOS token
        attention_mask = torch.ones_like(input_ids)
        with step(f"build {model_class.__name__}"):
            torch.manual_seed(0)
            model = model_class(config).eval()
        with step(f"forward {model_class.__name__}"), torch.no_grad():
            first_output = model(input_ids=input_ids, attention_mask=attention_mask)[0]
        with step(f"save and reload {model_class.__name__}"), tempfile.TemporaryDirectory() as checkpoint:
            model.save_pretrained(checkpoint)
            reloaded = model_class.from_pretrained(checkpoint).eval()
            with torch.no_grad():
                reloaded_output = reloaded(input_ids=input_ids, attention_mask=attention_mask)[0]
            torch.testing.assert_close(reloaded_output, first_output)
        if model.can_generate():
            with step(f"greedy generation of {model_class.__name__}, with and without the cache"):
                check_cached_generation(model, input_ids, attention_mask)

    tokenizer_class = next((getattr(package, name) for name in package.__all__ if name.endswith("Tokenizer")), None)
    if tokenizer_class is not None:
        base_model_class = model_classes[0]
        with step(f"{tokenizer_class.__name__} -> {base_model_class.__name__} forward"), torch.no_grad():
            tokenizer = tokenizer_class()  # its special tokens alone: enough to check the wiring
            batch = tokenizer(["Hello world!", "A second, longer sentence."], padding=True, return_tensors="pt")
            vocab_size = max(config.vocab_size, len(tokenizer))
            base_model_class(config_class(**{**tiny_config, "vocab_size": vocab_size})).eval()(**batch)
    return type_taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="directory that holds the generated package")
    parser.add_argument("--package", required=True, help="import name of the generated package")
    parser.add_argument("--tiny-config", required=True, type=json.loads, help="config overrides, as JSON")
    parser.add_argument("--input-ranks", type=json.loads, default={}, help="model class -> rank of its input ids")
    args = parser.parse_args(argv)

    # First on the path, so that a model inside a Transformers checkout imports that checkout's transformers
    sys.path.insert(0, args.src)
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"  skipped: {' and '.join(missing)} not installed in {sys.executable}")
        return SKIPPED

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    print(
        f"  {sys.executable}: torch {torch.__version__}, transformers {transformers.__version__} ({transformers.__file__})"
    )
    try:
        type_taken = run(args.package, args.tiny_config, args.input_ranks)
    except GenerationMismatch as mismatch:
        print(f"  {mismatch}", flush=True)
        return FAILED
    except Exception:
        traceback.print_exc()
        return FAILED
    return MODEL_TYPE_TAKEN if type_taken else 0


if __name__ == "__main__":
    sys.exit(main())
