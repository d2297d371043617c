"""A Transformers source checkout built offline from the release's sdist, for the in-tree layout's tests.

The sdist holds `src/`, `pyproject.toml` and `tests/*_common.py`, but not `tests/models/`, `utils/`, `docs/` or the
helpers the common testers import (`tests/utils/`, `tests/generation/`, `tests/exporters/`). `build_checkout` adds
what the in-tree layout needs: the `tests` packages, a `.gitignore` for Python's caches, a `_toctree.yml` laid out
as upstream's, and stand-ins for those helpers, which every real checkout has and the generated tests import as they
are, so that `ModelTesterMixin` and `ConfigTester` run. What therefore cannot run here: upstream's repository
checks (`utils/check_repo.py`, `check_copies.py`, `check_auto.py`, `check_inits.py`, the doc builder), the
generation tests of `GenerationTesterMixin`, the export tests of `ExportTesterMixin`, and the full
`config_common_kwargs` list.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

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
    identity = ["-c", "user.name=Porter", "-c", "user.email=porter@example.com", "-c", "commit.gpgsign=false"]
    for command in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "transformers sdist"]):
        subprocess.run(["git", *identity, *command], cwd=destination, check=True, capture_output=True)
    return destination


# Stand-ins for upstream's helper modules that the sdist lacks: empty mixins (their tests cannot run here) and the
# common config arguments that ConfigTester passes to every config, a subset of upstream's list.
COMMON_TESTER_STAND_INS = {
    "tests/generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "tests/exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
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


def add_common_tester_stand_ins(checkout: Path) -> None:
    for name, text in COMMON_TESTER_STAND_INS.items():
        path = checkout / name
        path.parent.mkdir(exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text, encoding="utf-8")
