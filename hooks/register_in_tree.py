"""Register a model generated into a Transformers checkout wherever upstream lists its models.

Run from the checkout's root by post_generate.py and post_update.py, with the template's `registration` answer:
    python register_in_tree.py --registration '{"model_type": "x", "config_class": "XConfig", "title": "X",
        "model_mappings": {"XModel": "MODEL_MAPPING_NAMES"}, "tokenizer_class": ""}'
`model_mappings` names the auto mapping of each model class (copier.yml's head_table says which).
Only inserts what is missing, each entry at its place in the mapping's order, so a second run changes nothing. Every
check runs before the first write: a destination that is not a checkout, a model type registered for another model or
a file it cannot write stops it with one message and exit status 6, with no file changed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REFUSED = 6
MODELS = Path("src/transformers/models")
MODELING_AUTO = MODELS / "auto/modeling_auto.py"
TOKENIZATION_AUTO = MODELS / "auto/tokenization_auto.py"
# Transformers 5.23 generates the config mapping into auto_mappings.py; earlier releases keep it in configuration_auto.py
CONFIG_MAPPING_FILES = (MODELS / "auto/auto_mappings.py", MODELS / "auto/configuration_auto.py")
MODELS_INIT = MODELS / "__init__.py"
TOCTREE = Path("docs/source/en/_toctree.yml")
TOCTREE_SECTION = "Text models"
ENTRY_KEY = re.compile(r'^\s+\("([^"]+)",')


class Refusal(Exception):
    """A reason to change nothing at all."""


@dataclass
class Insertion:
    path: Path
    where: str  # the mapping or section, for the report
    index: int  # the line the text goes before
    text: str


def say(message: str) -> None:
    print(f"[copier-transformers-model] {message}", flush=True)


def mapping_bounds(lines: list[str], name: str, path: Path) -> tuple[int, int]:
    """Indices of the first entry line and of the closing `]` of `NAME = OrderedDict(... [ ... ])`."""
    start = next((i for i, line in enumerate(lines) if re.match(rf"{name}\s*=\s*OrderedDict\b", line)), None)
    if start is None:
        raise Refusal(f"{path} has no {name}: this Transformers release lays its auto mappings out differently")
    opening = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith("["))
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].strip() == "]")
    return opening + 1, closing


def plan_mapping_entry(lines: list[str], path: Path, name: str, key: str, value: str) -> Insertion | None:
    """The line to insert so that `name` maps `key` to the class `value`; None when it already does."""
    first, closing = mapping_bounds(lines, name, path)
    entry = f'        ("{key}", {value}),'
    insert_at = closing
    for index in range(first, closing):
        match = ENTRY_KEY.match(lines[index])
        if match is None:
            continue
        if match.group(1) == key:
            if lines[index].strip() == entry.strip():
                return None
            raise Refusal(
                f'model type "{key}" is already in {name} of {path} for another model: {lines[index].strip()}'
            )
        if match.group(1) > key and insert_at == closing:
            insert_at = index
    return Insertion(path, name, insert_at, entry)


def plan_models_init(lines: list[str], model_type: str) -> Insertion | None:
    entry = f"    from .{model_type} import *"
    if entry in lines:
        return None
    imports = [i for i, line in enumerate(lines) if re.match(r"    from \.\w+ import \*$", line)]
    if not imports:
        raise Refusal(f"{MODELS_INIT} has no `from .<model> import *` lines to extend")
    after = [i for i in imports if lines[i] > entry]
    insert_at = after[0] if after else imports[-1] + 1
    return Insertion(MODELS_INIT, "the models index", insert_at, entry)


def indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def plan_toctree(lines: list[str], model_type: str, title: str) -> Insertion | None:
    """Two lines (`- local:`, `title:`) in the "Text models" section, where upstream's title order puts them."""
    if any(line.strip() == f"- local: model_doc/{model_type}" for line in lines):
        return None
    title_line = next(
        (
            i
            for i, line in enumerate(lines)
            if line.strip() in (f"title: {TOCTREE_SECTION}", f"- title: {TOCTREE_SECTION}")
        ),
        None,
    )
    if title_line is None:
        raise Refusal(
            f'{TOCTREE} has no "{TOCTREE_SECTION}" section; add docs/source/en/model_doc/{model_type}.md by hand'
        )
    # The section is one list item: `- ` at `item_indent`, its keys (title, sections) at `key_indent`
    key_indent = len(lines[title_line]) - len(lines[title_line].lstrip("- "))
    item_indent = key_indent - 2
    start = title_line
    while start > 0 and not lines[start].startswith(" " * item_indent + "- "):
        start -= 1
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].strip() and indentation(lines[i]) <= item_indent),
        len(lines),
    )
    sections_keys = (" " * key_indent + "sections:", " " * item_indent + "- sections:")
    sections = next((i for i in range(start, end) if lines[i] in sections_keys), None)
    entries = []  # (line index, title) of each `- local:` item of the section
    for index in range(sections + 1 if sections is not None else end, end):
        line = lines[index]
        if indentation(line) <= key_indent and line.strip() and not line.lstrip().startswith("- "):
            break  # the section's next key (its title, when the title comes last)
        if line.lstrip().startswith("- local: ") and index + 1 < len(lines):
            entries.append((index, lines[index + 1].strip().removeprefix("title: ")))
    if not entries:
        raise Refusal(f'the "{TOCTREE_SECTION}" section of {TOCTREE} lists no model pages to extend')
    entry_indent = indentation(lines[entries[0][0]])
    after = [i for i, entry_title in entries if entry_title.lower() > title.lower()]
    insert_at = after[0] if after else entries[-1][0] + 2
    text = f"{' ' * entry_indent}- local: model_doc/{model_type}\n{' ' * (entry_indent + 2)}title: {title}"
    return Insertion(TOCTREE, f'the "{TOCTREE_SECTION}" docs section', insert_at, text)


def plan(registration: dict) -> list[Insertion]:
    """Every insertion still missing; raises Refusal before anything is written."""
    model_type = registration["model_type"]
    for required in (MODELING_AUTO, MODELS_INIT, TOKENIZATION_AUTO):
        if not required.is_file():
            raise Refusal(
                f"{Path.cwd()} is not a Transformers source checkout ({required} is missing); "
                "the transformers layout needs the root of a clone of https://github.com/huggingface/transformers"
            )
    texts: dict[Path, list[str]] = {}

    def lines_of(path: Path) -> list[str]:
        if path not in texts:
            texts[path] = path.read_text(encoding="utf-8").splitlines()
        return texts[path]

    def entry(path: Path, mapping: str, value: str) -> Insertion | None:
        return plan_mapping_entry(lines_of(path), path, mapping, model_type, value)

    # The file whose CONFIG_MAPPING_NAMES is the literal list (5.23's configuration_auto.py only extends it)
    config_file = next(
        (
            path
            for path in CONFIG_MAPPING_FILES
            if path.is_file() and "CONFIG_MAPPING_NAMES = OrderedDict(" in lines_of(path)
        ),
        None,
    )
    if config_file is None:
        raise Refusal(f"no CONFIG_MAPPING_NAMES list in {' or '.join(map(str, CONFIG_MAPPING_FILES))}")
    planned = [entry(config_file, "CONFIG_MAPPING_NAMES", f'"{registration["config_class"]}"')]
    if "MODEL_NAMES_MAPPING = OrderedDict(" in lines_of(config_file):
        planned.append(entry(config_file, "MODEL_NAMES_MAPPING", f'"{registration["title"]}"'))
    for model_class, mapping in registration["model_mappings"].items():
        planned.append(entry(MODELING_AUTO, mapping, f'"{model_class}"'))
    if registration["tokenizer_class"]:
        value = f'"{registration["tokenizer_class"]}" if is_tokenizers_available() else None'
        planned.append(entry(TOKENIZATION_AUTO, "TOKENIZER_MAPPING_NAMES", value))
    planned.append(plan_models_init(lines_of(MODELS_INIT), model_type))
    if TOCTREE.is_file():
        planned.append(plan_toctree(lines_of(TOCTREE), model_type, registration["title"]))
    insertions = [insertion for insertion in planned if insertion is not None]
    unwritable = sorted({str(insertion.path) for insertion in insertions if not os.access(insertion.path, os.W_OK)})
    if unwritable:
        raise Refusal(f"cannot write {', '.join(unwritable)}; make it writable and run the registration again")
    return insertions


def apply(insertions: list[Insertion]) -> None:
    by_path: dict[Path, list[Insertion]] = {}
    for insertion in insertions:
        by_path.setdefault(insertion.path, []).append(insertion)
    for path, path_insertions in by_path.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        # From the bottom up, so that earlier line numbers stay valid
        for insertion in sorted(path_insertions, key=lambda item: item.index, reverse=True):
            lines[insertion.index : insertion.index] = insertion.text.split("\n")
        path.write_text("\n".join(lines) + ("\n" if text.endswith("\n") else ""), encoding="utf-8")
        for insertion in path_insertions:
            say(f"registered in {path} ({insertion.where}): {insertion.text.splitlines()[0].strip()}")


def register(registration: dict) -> int:
    try:
        insertions = plan(registration)
    except Refusal as refusal:
        say(f"registration refused, nothing was changed: {refusal}")
        return REFUSED
    if not insertions:
        say(f'registration: "{registration["model_type"]}" is already registered everywhere')
        return 0
    apply(insertions)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registration", required=True, type=json.loads, help="the template's `registration` answer")
    return register(parser.parse_args(argv).registration)


if __name__ == "__main__":
    sys.exit(main())
