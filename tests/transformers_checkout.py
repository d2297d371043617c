"""A Transformers source checkout built offline from the release's sdist, for the in-tree layout's tests.

The sdist holds `src/`, `pyproject.toml` and `tests/*_common.py`, but not `tests/models/`, `utils/`, `docs/` or the
helpers the common testers import (`tests/utils/`, `tests/generation/`, `tests/exporters/`). `build_checkout` adds
what the in-tree layout needs: the `tests` packages, a `.gitignore` for Python's caches, a `_toctree.yml` laid out
as upstream's, and the helpers, which every real checkout has and the generated tests import as they are.

The helpers come from upstream's snapshot beside this repository (`../shared/upstream-transformers/`, see its
README) when it is there: then `GenerationTesterMixin` runs upstream's generation tests. Without it, and for what
the snapshot cannot provide, stand-ins take their place: an empty `GenerationTesterMixin` and `ExportTesterMixin`,
an empty tiny-model summary (the pipeline tests skip, as they do offline anywhere), and a subset of
`config_common_kwargs`. Upstream's repository checks need its `utils/` and `docs/` as well: tests/upstream_checks.py
adds the snapshot's to this checkout (`nox -s upstream_checks`). The export tests cannot run here either way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from helpers import FAMILY_HEADS, git

UPSTREAM_SNAPSHOT = Path(__file__).resolve().parent.parent.parent / "shared" / "upstream-transformers"

# The models the in-tree tests and the upstream checks copy into a checkout: family -> (model name, model type,
# tokenizer); every head of the family is generated
MODELS = {
    "decoder": ("PortedDecoder", "ported_decoder", "bpe"),
    "encoder": ("PortedEncoder", "ported_encoder", "wordpiece"),
    "encoder-decoder": ("PortedSeq2Seq", "ported_seq2seq", "reuse"),
}


def answers_for(family: str, **overrides) -> dict:
    model_name, model_type, tokenizer = MODELS[family]
    answers = {"layout": "transformers", "family": family, "model_name": model_name, "model_type": model_type}
    return answers | {"heads": FAMILY_HEADS[family], "tokenizer": tokenizer} | overrides


def copy_into(
    template: Path, checkout: Path, answers: dict, vcs_ref: str | None = None
) -> subprocess.CompletedProcess:
    """`copier copy` as a user runs it, hooks included, with the output kept for the assertions."""
    command = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--quiet"]
    command += [
        f"--data={name}={value if isinstance(value, str) else json.dumps(value)}" for name, value in answers.items()
    ]
    command += [f"--vcs-ref={vcs_ref}"] if vcs_ref else []
    return subprocess.run([*command, str(template), str(checkout)], capture_output=True, text=True)


# The "Text models" section as upstream lays it out (docs/source/en/_toctree.yml), with a few of its models
TOCTREE = """\
- sections:
  - local: index
    title: Transformers
  title: Get started
- sections:
  - isExpanded: false
    sections:
    - title: Text models
      sections:
      - local: model_doc/albert
        title: ALBERT
      - local: model_doc/bart
        title: BART
      - local: model_doc/bert
        title: BERT
      - local: model_doc/llama
        title: Llama
      - local: model_doc/t5
        title: T5
      - local: model_doc/yoso
        title: YOSO
    - title: Vision models
      sections:
      - local: model_doc/vit
        title: Vision Transformer (ViT)
    title: Models
  title: API
"""


def download_sdist(version: str, cache: Path) -> Path:
    """The transformers sdist of `version`, from PyPI the first time, then from `cache`."""
    sdist = cache / f"transformers-{version}.tar.gz"
    if not sdist.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            + [f"transformers=={version}", "--dest", str(cache)],
            check=True,
            capture_output=True,
        )
    return sdist


def build_checkout(sdist: Path, destination: Path) -> Path:
    """Unpack the sdist into `destination`, add what the tests need, and commit it all (updates need git)."""
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        # The "data" filter (Python 3.11.4 and later) refuses links and paths that leave the folder
        safety = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(destination.parent / f".{destination.name}-unpacked", **safety)
    (destination.parent / f".{destination.name}-unpacked" / root).rename(destination)
    (destination.parent / f".{destination.name}-unpacked").rmdir()
    if not safety and os.geteuid() == 0:
        # Without the filter root keeps the archive's owners, and git refuses a work tree of another user
        for path in [destination, *destination.rglob("*")]:
            os.lchown(path, os.getuid(), os.getgid())
    for package in ("tests", "tests/models"):
        (destination / package).mkdir(exist_ok=True)
        (destination / package / "__init__.py").touch()
    (destination / "docs/source/en/model_doc").mkdir(parents=True)
    (destination / "docs/source/en/_toctree.yml").write_text(TOCTREE, encoding="utf-8")
    add_common_tester_stand_ins(destination)
    # The part of upstream's .gitignore that running Python in the checkout needs (the sdist has none)
    (destination / ".gitignore").write_text("__pycache__/\n*.py[cod]\n.pytest_cache/\n", encoding="utf-8")
    for command in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "transformers sdist"]):
        git(destination, *command)
    return destination


# Stand-ins for upstream's helper modules that the sdist lacks: empty mixins (their tests cannot run here), no tiny
# models for the pipeline tests, and the common config arguments that ConfigTester passes to every config, a subset
# of upstream's list (the snapshot's module imports httpx, which Transformers 5.24 no longer installs).
COMMON_TESTER_STAND_INS = {
    "tests/generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "tests/exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "tests/utils/tiny_model_summary.json": "{}\n",
    "tests/utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "output_hidden_states": True,\n'
        '    "output_attentions": True,\n'
        '    "dtype": "float16",\n'
        '    "tie_word_embeddings": False,\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}
# What the snapshot provides in their place: the generation and export testers, as upstream has them
FROM_UPSTREAM_SNAPSHOT = ["tests/generation", "tests/exporters"]


# Class attributes of PreTrainedModel that the snapshot's testers read and later releases removed (5.25:
# `_is_stateful`, with assisted generation no longer refusing any model), with the value they had
REMOVED_MODEL_ATTRIBUTES = {"_is_stateful": "False"}


def add_common_tester_stand_ins(checkout: Path, snapshot: Path = UPSTREAM_SNAPSHOT) -> None:
    for name, text in COMMON_TESTER_STAND_INS.items():
        path = checkout / name
        path.parent.mkdir(exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text, encoding="utf-8")
    if snapshot.is_dir():
        for name in FROM_UPSTREAM_SNAPSHOT:
            shutil.rmtree(checkout / name)
            shutil.copytree(snapshot / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
            read_removed_attributes_with_their_old_value(checkout, checkout / name)


def read_removed_attributes_with_their_old_value(checkout: Path, testers: Path) -> None:
    """The snapshot's testers, written for an older release than the sdist, read an attribute the sdist no longer
    defines with getattr and the value it had, so that their tests run rather than fail on the skew."""
    modeling_utils = (checkout / "src" / "transformers" / "modeling_utils.py").read_text(encoding="utf-8")
    removed = {name: value for name, value in REMOVED_MODEL_ATTRIBUTES.items() if f" {name}:" not in modeling_utils}
    for path in testers.rglob("*.py"):
        text = original = path.read_text(encoding="utf-8")
        for name, value in removed.items():
            text = re.sub(rf"\b(model_class|model|self)\.{name}\b", rf'getattr(\1, "{name}", {value})', text)
        if text != original:
            path.write_text(text, encoding="utf-8")


def has_upstream_generation_tests(checkout: Path) -> bool:
    """Whether the checkout's GenerationTesterMixin is upstream's (from the snapshot), not the empty stand-in."""
    return (checkout / "tests/generation/test_utils.py").read_text(encoding="utf-8") != COMMON_TESTER_STAND_INS[
        "tests/generation/test_utils.py"
    ]
