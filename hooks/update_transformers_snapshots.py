"""Rewrite the snapshots in `hooks/data/` from the installed Transformers.

Copier validates answers in its own interpreter, which may have no Transformers: the validators read these
snapshots instead. `registered_model_types.txt` lists the model types `model_type` must not take;
`tokenizer_classes.txt` the tokenizer classes `reused_tokenizer` may name; `python_names.txt` the keywords, builtins
and standard-library modules `package_name` must not shadow. Run `nox -s refresh_snapshots` after a
Transformers release; a test fails when a snapshot misses something of the installed Transformers.
"""

from __future__ import annotations

import builtins
import keyword
import re
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
MODEL_TYPES = DATA / "registered_model_types.txt"
TOKENIZER_CLASSES = DATA / "tokenizer_classes.txt"
PYTHON_NAMES = DATA / "python_names.txt"


def read_names(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def installed_model_types() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(CONFIG_MAPPING_NAMES)


def installed_tokenizer_classes() -> list[str]:
    import transformers
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    names = set()
    for value in TOKENIZER_MAPPING_NAMES.values():
        names.update(name for name in (value if isinstance(value, (tuple, list)) else [value]) if name)
    return sorted(name for name in names if hasattr(transformers, name))


def installed_python_names() -> list[str]:
    """Names a lower-case package must not take: keywords, builtins and standard-library modules."""
    names = {*keyword.kwlist, *keyword.softkwlist, *dir(builtins), *sys.stdlib_module_names}
    return sorted(name for name in names if re.fullmatch("[a-z_][a-z0-9_]*", name))


def main() -> None:
    import transformers

    snapshots = [
        (MODEL_TYPES, installed_model_types()),
        (TOKENIZER_CLASSES, installed_tokenizer_classes()),
        # Kept from earlier runs too, so that the list covers every Python the snapshots were refreshed with
        (PYTHON_NAMES, sorted(set(installed_python_names()) | set(read_names(PYTHON_NAMES)))),
    ]
    for path, names in snapshots:
        path.write_text("\n".join(names) + "\n")
        print(f"wrote {len(names)} names of transformers {transformers.__version__} to {path}")


if __name__ == "__main__":
    main()
