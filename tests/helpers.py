"""What the template's tests share besides fixtures (those are in conftest.py): answer sets, the families' knobs
and heads, rendering checks, running generated suites, git and the noxfile's release logic."""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import importlib
import importlib.metadata
import importlib.util
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from warm_python import warm_python_command

# Nothing in the template's checks may reach the Hub: generated code, hooks and tests work offline.
os.environ["HF_HUB_OFFLINE"] = "1"
# One torch thread in this process and in every child (hooks, generated suites, workers): the models are tiny, and
# the xdist workers and the suites they run share the cores. More threads than cores spin and slow everything down.
os.environ["OMP_NUM_THREADS"] = "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
ANSWERS_DIR = Path(__file__).parent / "answers"
TEMPLATE_FILES = ["copier.yml", "template", "hooks"]


def load_answer_set(name: str) -> dict:
    return yaml.safe_load((ANSWERS_DIR / f"{name}.yml").read_text()) or {}


ANSWER_SETS = sorted(path.stem for path in ANSWERS_DIR.glob("*.yml"))

# The code-changing knobs each family asks, with every value it allows (test_validators checks the others are
# rejected).
FAMILY_KNOBS = {
    "decoder": {
        "normalization": ["rms_norm", "layer_norm", "rms_norm_unit_offset"],
        "position_embedding": ["rope", "learned", "none"],
        "mlp": ["gated_silu", "gelu", "gated_gelu_tanh", "gated_gelu"],
        "embedding_scale": [False, True],
        "linear_bias": [False, True],
        "qkv_bias": [False, True],
        "attention_window": ["full", "sliding", "alternating"],
        "qk_norm": ["none", "per_head", "projection"],
        "norm_placement": ["pre", "post_sublayer", "sandwich"],
        "attention_scaling": ["head_dim", "query_pre_attn_scalar"],
        "soft_capping": [False, True],
        "parallel_residual": [False, True],
        "mixture_of_experts": ["none", "routed", "routed_and_shared"],
    },
    "encoder": {
        "position_embedding": ["learned", "rope"],
        "padding_offset_positions": [False, True],
        "norm_placement": ["post", "pre"],
        "embedding_norm": [False, True],
        "mlp": ["gelu", "gated_gelu", "gated_silu", "gated_gelu_tanh"],
        "linear_bias": [True, False],
        "attention_window": ["full", "sliding", "alternating"],
        "token_type_embeddings": [True, False],
        "pooler": [True, False],
    },
    "encoder-decoder": {},
}
# copier.yml's head_table: a row per head, with the families that offer it
HEAD_TABLE = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())["head_table"]["default"]
FAMILY_HEADS = {
    family: [head for head, row in HEAD_TABLE.items() if family in row["output_classes"]] for family in FAMILY_KNOBS
}


JINJA_COMPILER_OPTIONS = [
    *["block_start_string", "block_end_string", "variable_start_string", "variable_end_string"],
    *["comment_start_string", "comment_end_string", "line_statement_prefix", "line_comment_prefix"],
    *["trim_blocks", "lstrip_blocks", "newline_sequence", "keep_trailing_newline", "optimized", "autoescape"],
    "finalize",
]


# The noxfile's release and version logic, which the tests check (importing it needs nox, as the sessions do)
NOXFILE_SPEC = importlib.util.spec_from_file_location("noxfile", REPO_ROOT / "noxfile.py")
noxfile = importlib.util.module_from_spec(NOXFILE_SPEC)
NOXFILE_SPEC.loader.exec_module(noxfile)


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Porter", "-c", "user.email=porter@example.com", "-c", "commit.gpgsign=false"]
    result = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True, check=True)
    return result.stdout


def clone(destination: Path, *options: str) -> Path:
    """A clone of this repository (the release tests need its history)."""
    if not (REPO_ROOT / ".git").exists():
        pytest.fail("the release tests need the template's git history: run them in a clone of the repository")
    subprocess.run(["git", "clone", "--quiet", *options, str(REPO_ROOT), str(destination)], check=True)
    if (destination / ".git" / "shallow").exists():
        pytest.fail("the release tests need the whole history: git fetch --unshallow")
    return destination


Render = Callable[..., Path]


def declared_transformers(project: Path) -> Requirement:
    """The Transformers requirement of a generated package's pyproject.toml."""
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(line) for line in dependencies if Requirement(line).name == "transformers")


def outside_declared_transformers(project: Path) -> str | None:
    """Why the installed Transformers cannot run a generated package (the range it declares excludes it), or None."""
    installed = importlib.metadata.version("transformers")
    requirement = declared_transformers(project)
    if requirement.specifier.contains(installed, prereleases=True):
        return None
    return f"transformers {installed} is installed; {project.name} declares {requirement}: a nox session installs one"


def package_modules(project: Path) -> list[str]:
    """The dotted names of every module a generated package holds (src/<package>/**/*.py)."""
    return sorted(
        ".".join(path.relative_to(project / "src").with_suffix("").parts).removesuffix(".__init__")
        for path in (project / "src").glob("*/**/*.py")
    )


def deprecations_are_errors(project: Path) -> list[str]:
    """pytest options that fail on any FutureWarning or DeprecationWarning the generated package's own code causes
    (an API that upstream renamed); warnings that Transformers or torch raise about themselves stay warnings."""
    modules = package_modules(project)
    errors = [
        f"-Werror::{category}:{module}" for module in modules for category in ("FutureWarning", "DeprecationWarning")
    ]
    # Later filters win. Transformers 5.5.4 (QEfficient's pin) hands a tokenizer's `from_pretrained` file paths,
    # which tokenizers 0.22 (the newest 5.5.4 admits) deprecates in `BPE(...)` ("Deprecated in 0.9.0: BPE.__init__
    # will not create from files anymore"); later releases pass the loaded vocabulary
    tokenizers = [module for module in modules if module.rpartition(".")[2].startswith("tokenization_")]
    return errors + [f"-Wignore:Deprecated in 0.9.0:DeprecationWarning:{module}" for module in tokenizers]


def run_generated_tests(project: Path, *pytest_args: str) -> subprocess.CompletedProcess:
    """Run a generated project's own test suite with the interpreter running this one (a warm fork of it);
    deprecations that the package's code causes are errors.

    One torch thread: the tiny models gain nothing from more, and two suites can then share two cores."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    pytest = [
        *warm_python_command(),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *deprecations_are_errors(project),
    ]
    return subprocess.run(
        [*pytest, *pytest_args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


# `nox -s every_release`: the release tests start from every release, not only the ones the default sessions take
EVERY_RELEASE = os.environ.get("TEST_EVERY_RELEASE") == "1"

# Loading a saved checkpoint with remote code starts a fresh interpreter (10 s a suite) and depends on the package's
# module layout and its heads, not on the knobs: the suites that cover those run it, the others deselect it
WITHOUT_THE_REMOTE_CODE_TEST = ("-k", "not test_saved_checkpoint_loads_with_remote_code")


def run_generated_test_suites(
    projects: dict[str, Path], *pytest_args: str, more_args: dict[str, tuple[str, ...]] | None = None
) -> dict[str, subprocess.CompletedProcess]:
    """Each project's own test suite, two at a time (each runs in its own process); `more_args` adds arguments to
    some projects' runs."""
    more_args = more_args or {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = {
            name: pool.submit(run_generated_tests, project, *pytest_args, *more_args.get(name, ()))
            for name, project in projects.items()
        }
        return {name: result.result() for name, result in results.items()}


@contextlib.contextmanager
def captured_output_of_subprocesses() -> Iterator[list[str]]:
    """What child processes write to this process's stdout (Copier's tasks inherit it), as one string."""
    output: list[str] = []
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield output
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            output.append(sink.read().decode(errors="replace"))


def import_rendered_package(project: Path, package_name: str):
    """Import a rendered package in this process; oracle answer sets give each one a unique name."""
    sys.path.insert(0, str(project / "src"))
    try:
        return importlib.import_module(package_name)
    finally:
        sys.path.remove(str(project / "src"))


def generated_modules(render, answer_set: str):
    """The rendered package of an answer set, its conversion module and its parity harness module."""
    project = render(load_answer_set(answer_set), name=answer_set)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    package_name, model_type = answers["package_name"], answers["model_type"]
    package = import_rendered_package(project, package_name)
    convert = importlib.import_module(f"{package_name}.convert_{model_type}_checkpoint")
    compare = importlib.import_module(f"{package_name}.compare_{model_type}_with_original")
    return package, convert, compare


def convert_cli(convert, checkpoint: Path, output: Path, *extra_args, config: Path | None = None) -> int:
    config = config or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "config.json"
    args = ["--checkpoint", checkpoint, "--config", config, "--output", output, *extra_args]
    return convert.main([str(arg) for arg in args])


def assert_same_logits_and_hidden_states(actual, expected, attention_mask, atol: float = 1e-5) -> None:
    """An encoder oracle's check: the logits and every hidden state agree on the real (unmasked) tokens."""
    import torch  # here: the other helpers run without torch loaded

    real_tokens = attention_mask.bool()
    torch.testing.assert_close(actual.logits[real_tokens], expected.logits[real_tokens], rtol=0, atol=atol)
    for actual_states, expected_states in zip(actual.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(actual_states[real_tokens], expected_states[real_tokens], rtol=0, atol=atol)


def packed_sequences(lengths: list[int], vocab_size: int, first_position: int = 0) -> dict:
    """Sequences of `lengths` packed into one row without an attention mask, their position ids restarting at
    `first_position` for each (a training collator's format), and each sequence alone with its own positions."""
    import torch

    input_ids = torch.randint(3, vocab_size, (1, sum(lengths)), generator=torch.Generator().manual_seed(2))
    positions = [torch.arange(first_position, first_position + length) for length in lengths]
    alone = [
        {"input_ids": part, "position_ids": position.unsqueeze(0)}
        for part, position in zip(input_ids.split(lengths, dim=1), positions, strict=True)
    ]
    return {"packed": {"input_ids": input_ids, "position_ids": torch.cat(positions).unsqueeze(0)}, "alone": alone}


def assert_packed_sequences_match_the_original(rendered, original, lengths: list[int], vocab_size: int, **kwargs):
    """An encoder oracle's packed-sequence check: the packed row's logits are the original's within 1e-5, and from
    Transformers 5.25 on, where BERT's and RoBERTa's masks read restarting position ids, each sequence's are its
    logits alone."""
    import torch
    import transformers
    from packaging.version import Version

    batch = packed_sequences(lengths, vocab_size, **kwargs)
    with torch.no_grad():
        packed = rendered(**batch["packed"]).logits
        torch.testing.assert_close(packed, original(**batch["packed"]).logits, rtol=0, atol=1e-5)
        if Version(transformers.__version__) >= Version("5.25"):
            alone = torch.cat([rendered(**sequence).logits for sequence in batch["alone"]], dim=1)
            torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)


def converted_with_generated_script(render, tmp_path_factory, name: str, answer_set: str, original, head: str):
    """The rendered model of an answer set, loaded (eager attention) from `original`'s saved checkpoint after the
    answer set's generated conversion script, unedited, converted it: the oracles' second model."""
    checkpoint = tmp_path_factory.mktemp(f"{name}-checkpoint")
    original.save_pretrained(checkpoint)
    package, convert, _ = generated_modules(render, answer_set)
    converted_dir = tmp_path_factory.mktemp(f"{name}-converted")
    assert convert_cli(convert, checkpoint, converted_dir) == 0
    rendered_class = getattr(package, f"{load_answer_set(answer_set)['model_name']}For{head}")
    return rendered_class.from_pretrained(converted_dir, attn_implementation="eager").eval()


def ruff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, cwd=cwd)


def mlinter_command(*paths: Path) -> list[str]:
    """transformers-mlinter, upstream's structural rules for model files, over the model files under `paths`."""
    return [sys.executable, "-m", "mlinter", "--no-progress", "--no-cache", *map(str, paths)]


def mlinter(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(mlinter_command(*paths), capture_output=True, text=True)


def assert_mlinter_clean(*projects: Path) -> None:
    result = mlinter(*(project / folder for project in projects for folder in ("src", "tests")))
    assert result.returncode == 0, result.stdout + result.stderr


def can_be_answered(knobs: dict) -> bool:
    """Whether the questionnaire can give these knob values together (copier.yml's `when`s, and the validators that
    refuse a combination of knobs); a knob the combination does not hold yet refuses nothing."""
    both_biases = knobs.get("linear_bias") and knobs.get("qkv_bias")
    offset_rotary = knobs.get("padding_offset_positions") and knobs.get("position_embedding") == "rope"
    parallel_without_pre_norm = knobs.get("parallel_residual") and knobs.get("norm_placement", "pre") != "pre"
    embedding_norm_without_pre_norm = knobs.get("embedding_norm") and knobs.get("norm_placement", "pre") != "pre"
    experts = knobs.get("mixture_of_experts", "none") != "none"
    ungated_or_biased_experts = experts and (knobs.get("mlp") == "gelu" or knobs.get("linear_bias"))
    return not (
        both_biases
        or offset_rotary
        or parallel_without_pre_norm
        or embedding_norm_without_pre_norm
        or ungated_or_biased_experts
    )


def covered_values(knobs: dict) -> set[tuple]:
    """Each knob's value, and each pair of two knobs' values, that a combination holds."""
    values = sorted(knobs.items())
    return {(value,) for value in values} | set(itertools.combinations(values, 2))


def pairwise_combinations(knobs: dict[str, list], restarts: int = 10, tries: int = 10) -> list[dict]:
    """A deterministic pairwise cover: every value of every knob, and every pair of values of two knobs that the
    questionnaire allows together, is in at least one combination returned. Greedy, one combination at a time
    (AETG): of `tries` combinations grown from a value or pair not yet covered (`grown_combination`), the one that
    covers the most not yet covered; randomness from a fixed seed, and the smallest cover of `restarts` seeds wins.
    It never builds the knobs' product, which has some hundred thousand combinations."""
    if not knobs:
        return [{}]  # a family without knobs still renders once
    wanted = {(value,) for value in ((knob, value) for knob, values in knobs.items() for value in values)}
    for (knob, values), (other, other_values) in itertools.combinations(knobs.items(), 2):
        for value, other_value in itertools.product(values, other_values):
            if can_be_answered({knob: value, other: other_value}):
                wanted |= covered_values({knob: value, other: other_value})
    best: list[dict] = []
    for seed in range(restarts):
        rng = random.Random(seed)
        uncovered, cover = set(wanted), []
        while uncovered:
            candidates = [grown_combination(knobs, uncovered, rng) for _ in range(tries)]
            combination = max(candidates, key=lambda candidate: len(covered_values(candidate) & uncovered))
            cover.append(combination)
            uncovered -= covered_values(combination)
        if not best or len(cover) < len(best):
            best = cover
    return [{knob: combination[knob] for knob in knobs} for combination in best]


def grown_combination(knobs: dict[str, list], uncovered: set[tuple], rng: random.Random) -> dict:
    """A combination holding a value or pair of `uncovered`, whose other knobs, in a shuffled order, each take the
    allowed value that covers the most of `uncovered` with what the combination holds so far."""
    combination = dict(rng.choice(sorted(uncovered, key=repr)))
    for knob in rng.sample(list(knobs), len(knobs)):
        if knob not in combination:
            combination[knob] = best_value(knobs[knob], knob, combination, uncovered, rng)
    return combination


def best_value(values: list, knob: str, combination: dict, uncovered: set[tuple], rng: random.Random):
    """Of a knob's values that the combination allows, the one that covers the most of `uncovered` with it."""
    allowed = [value for value in rng.sample(values, len(values)) if can_be_answered({**combination, knob: value})]
    if not allowed:
        raise ValueError(f"no value of {knob} goes with {combination}: can_be_answered has a constraint of 3 knobs")

    def newly_covered(value) -> int:
        entry = (knob, value)
        return ((entry,) in uncovered) + sum(tuple(sorted([entry, item])) in uncovered for item in combination.items())

    return max(allowed, key=newly_covered)


def head_subsets_for(family: str, index: int) -> list[list[str]]:
    """The heads the index-th combination of a family renders with: all of them, none, one head and all but that
    one (the index picks it). Across a family's combinations, every knob value meets every head present and absent,
    and every two heads meet in each of their four states: the heads are covered pairwise too."""
    heads = FAMILY_HEADS[family]
    if not heads:
        return [[]]
    picked = heads[index % len(heads)]
    subsets = [heads, [], [picked], [head for head in heads if head != picked]]
    return [list(subset) for subset in dict.fromkeys(map(tuple, subsets))]


# The knob space is too large for its product: the matrices render a pairwise cover of each family's knobs
KNOB_COMBINATIONS = [
    {"family": family, **combination}
    for family, knobs in FAMILY_KNOBS.items()
    for combination in pairwise_combinations(knobs)
]


CACHE_DIRS = {".git", ".ruff_cache", ".pytest_cache", "__pycache__"}
# Jinja's openings; a closing `}}` is legitimate Python (nested f-string format specs), and `${{` opens an
# expression of a GitHub workflow
JINJA_LEFTOVER = re.compile(r"(?<!\$)\{\{|\{%|\{#")


def combination_id(answers: dict) -> str:
    knobs = FAMILY_KNOBS[answers["family"]]
    return "-".join([answers["family"]] + [f"{knob}={answers[knob]}" for knob in knobs])


def assert_clean_text(project: Path) -> None:
    """No Jinja leftovers, trailing spaces, runs of blank lines or missing final newlines in any non-empty file."""
    for path in sorted(project.rglob("*")):
        if not path.is_file() or CACHE_DIRS.intersection(path.parts):
            continue
        text = path.read_text()
        name = path.relative_to(project)
        assert not JINJA_LEFTOVER.search(text), f"Jinja syntax left in {name}"
        if not text:
            continue  # an empty package marker, as upstream's tests/models/<x>/__init__.py
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{name} must end with exactly one newline"
        for number, line in enumerate(text.splitlines(), start=1):
            assert line == line.rstrip(), f"trailing whitespace in {name}:{number}"
        assert "\n\n\n\n" not in text, f"more than two blank lines in a row in {name}"
        if path.suffix == ".py":
            ast.parse(text, filename=str(name))


def assert_ruff_clean(*paths: Path) -> None:
    check = ruff("check", "--no-cache", *map(str, paths))
    assert check.returncode == 0, check.stdout + check.stderr
    formatting = ruff("format", "--check", "--no-cache", *map(str, paths))
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


def assert_suite_passed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


# The knob matrix (test_knob_matrix*.py): every knob combination with every head, copied with the hook
def with_value_knobs(index: int, knobs: dict) -> dict:
    """Tied embeddings and the grouped-query ratio vary along the matrix too, where the family asks them."""
    if knobs["family"] == "decoder":
        return {**knobs, "num_key_value_heads": [8, 32, 1][index % 3]}
    if knobs["family"] == "encoder":
        return {**knobs, "tie_word_embeddings": index % 2 == 0}
    return knobs


KNOB_MATRIX = {combination_id(knobs): with_value_knobs(index, knobs) for index, knobs in enumerate(KNOB_COMBINATIONS)}


def covering_every_value(cases: dict[str, dict]) -> dict[str, dict]:
    """Few combinations that together hold every value of every knob: greedily, the one with the most values not yet
    held (the first of equals), kept in the matrix's order."""
    values = {name: set(knobs.items()) for name, knobs in cases.items()}
    held, chosen = set(), set()
    while missing := set().union(*values.values()) - held:
        best = max(values, key=lambda name: len(values[name] & missing))
        chosen.add(best)
        held |= values[best]
    return {name: knobs for name, knobs in cases.items() if name in chosen}


def knob_matrix_cases(families: list[str]) -> dict[str, dict]:
    """The combinations copied with the hook and tested with their own suites (20 s each). test_render_matrix.py
    renders and lints every combination; here the default sessions take, per family, combinations that together hold
    every knob value (9 of 30), and KNOB_MATRIX=all (`nox -s knob_matrix`) takes all of them."""
    cases = {}
    for family in families:
        of_family = {name: knobs for name, knobs in KNOB_MATRIX.items() if knobs["family"] == family}
        cases |= of_family if os.environ.get("KNOB_MATRIX") == "all" else covering_every_value(of_family)
    return cases


def build_knob_matrix(render, cases: dict[str, dict]) -> dict[str, tuple[Path, str, subprocess.CompletedProcess]]:
    """Each combination copied with the hook (one after another, each hook's output kept), then each project's own
    test suite (two at a time): {combination: (project, hook output, suite result)}."""
    projects, hook_outputs = {}, {}
    for name, knobs in cases.items():
        answers = {
            **knobs,
            "heads": FAMILY_HEADS[knobs["family"]],
            "model_name": "KnobMatrix",
            "package_name": "knob_matrix",
        }
        with captured_output_of_subprocesses() as output:
            projects[name] = render(answers, name="knob-matrix", tasks=True)
        hook_outputs[name] = output[0]
    suites = run_generated_test_suites(projects, *WITHOUT_THE_REMOTE_CODE_TEST)
    return {name: (projects[name], hook_outputs[name], suites[name]) for name in cases}


def check_knob_matrix_case(knobs: dict, project: Path, hook_output: str, suite: subprocess.CompletedProcess) -> None:
    assert "smoke test passed" in hook_output, hook_output
    for head in FAMILY_HEADS[knobs["family"]]:
        assert f"ok      forward KnobMatrixFor{head}" in hook_output
        if head in ("CausalLM", "ConditionalGeneration"):
            assert f"ok      greedy generation of KnobMatrixFor{head}, with and without the cache" in hook_output
    assert_clean_text(project)
    assert_ruff_clean(project)
    assert_suite_passed(suite)


# A template with two tagged versions, for the update tests
OLD, NEW = "0.1.0", "0.2.0"
MODELING = "src/brand_new_bert/modeling_brand_new_bert.py"
# The lines version 0.2.0 changes, as rendered
OLD_DOCSTRING = '"""PyTorch BrandNewBert model."""'
NEW_DOCSTRING = '"""PyTorch BrandNewBert model, as improved in version 0.2.0."""'
OLD_VARIANCE = "        variance = hidden_states.pow(2).mean(-1, keepdim=True)"
NEW_VARIANCE = "        variance = hidden_states.pow(2).mean(dim=-1, keepdim=True)"


def edit_template_file(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}: the test's template change no longer applies"
    path.write_text(text.replace(old, new, 1))


NEW_README_HEADING = "## Check parity with the original implementation\n"
RENAME_MIGRATION = """_migrations:
  - version: "0.2.0"
    when: "{{ _stage == 'before' }}"
    command:
      - "{{ _copier_python }}"
      - "{{ _copier_conf.src_path }}/hooks/migrations/rename_files.py"
      - "--stage=before"
      - "--version=0.2.0"
      - "--answers-file={{ _copier_conf.answers_file }}"
      - "--template={{ _copier_conf.src_path }}"
  - version: "0.2.0"
    when: "{{ _stage == 'after' }}"
    command:
      - "{{ _copier_python }}"
      - "{{ _copier_conf.src_path }}/hooks/migrations/rename_files.py"
      - "--stage=after"
      - "--version=0.2.0"
"""


def make_tagged_template(template_dir: Path, repo: Path, rename_readme: bool = False, migration: bool = True) -> Path:
    """A git copy of the template: the working tree tagged OLD, then a commit with NEW's changes tagged NEW."""
    shutil.copytree(template_dir, repo)
    git(repo, "init", "--quiet")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "old version")
    git(repo, "tag", OLD)

    if rename_readme:
        readme = "{% if not in_tree %}README.md{% endif %}.jinja"
        (repo / "template" / "docs").mkdir(exist_ok=True)
        git(repo, "mv", f"template/{readme}", f"template/docs/{readme}")
        # The moved file changes too, far from the user's edit: the merge must keep both without a conflict
        edit_template_file(
            repo / "template" / "docs" / readme, "## Check parity with the original\n", NEW_README_HEADING
        )
        if migration:
            registry = repo / "hooks" / "migrations" / "renames.yml"
            entry = "  - version: 0.2.0\n    from: README.md\n    to: docs/README.md\n"
            edit_template_file(registry, "renames:\n", f"renames:\n{entry}")
            edit_template_file(repo / "copier.yml", "_migrations:\n", RENAME_MIGRATION)
    includes = repo / "template" / "_includes"
    edit_template_file(
        includes / "macros.jinja",
        '"""PyTorch {{ model_name }} model."""',
        NEW_DOCSTRING.replace("BrandNewBert", "{{ model_name }}"),
    )
    edit_template_file(includes / "blocks" / "layers.jinja", OLD_VARIANCE.strip(), NEW_VARIANCE.strip())
    (repo / "template" / "CONTRIBUTING.md.jinja").write_text("# Contributing to {{ model_name }}\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "new version")
    git(repo, "tag", NEW)
    return repo
