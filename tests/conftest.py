"""Shared fixtures: render the template with Copier's API and check what comes out."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import copier
import jinja2
import pytest
import yaml
from packaging.requirements import Requirement

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
# rejected), and the heads it offers.
FAMILY_KNOBS = {
    "decoder": {
        "normalization": ["rms_norm", "layer_norm"],
        "position_embedding": ["rope", "learned", "none"],
        "mlp": ["gated_silu", "gelu"],
    },
    "encoder": {
        "position_embedding": ["learned", "rope"],
        "norm_placement": ["post", "pre"],
        "token_type_embeddings": [True, False],
        "pooler": [True, False],
    },
    "encoder-decoder": {},
}
FAMILY_HEADS = {
    "decoder": ["CausalLM", "SequenceClassification", "TokenClassification", "QuestionAnswering"],
    "encoder": ["MaskedLM", "SequenceClassification", "TokenClassification", "QuestionAnswering", "MultipleChoice"],
    "encoder-decoder": ["ConditionalGeneration", "SequenceClassification"],
}


@pytest.fixture(scope="session", autouse=True)
def compiled_jinja_is_shared_between_renders():
    """Copier makes a new Jinja environment for each render and compiles every template again: two thirds of a
    render's time. Renders in this process share the compiled code instead, keyed by the source and every
    environment option the compiler reads, so the output is the same; only the time changes."""
    original_compile = jinja2.Environment.compile
    compiled = {}

    def compile_once(environment, source, name=None, filename=None, raw=False, defer_init=False):
        if raw or not isinstance(source, str):
            return original_compile(environment, source, name, filename, raw, defer_init)
        options = tuple(getattr(environment, option) for option in JINJA_COMPILER_OPTIONS)
        key = (type(environment), tuple(sorted(environment.extensions)), options, source, name, filename, defer_init)
        if key not in compiled:
            compiled[key] = original_compile(environment, source, name, filename, raw, defer_init)
        return compiled[key]

    jinja2.Environment.compile = compile_once
    yield
    jinja2.Environment.compile = original_compile


JINJA_COMPILER_OPTIONS = [
    *["block_start_string", "block_end_string", "variable_start_string", "variable_end_string"],
    *["comment_start_string", "comment_end_string", "line_statement_prefix", "line_comment_prefix"],
    *["trim_blocks", "lstrip_blocks", "newline_sequence", "keep_trailing_newline", "optimized", "autoescape"],
    "finalize",
]


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory) -> Path:
    """The template as it is in the working tree, outside git, so Copier renders it without cloning."""
    copy = tmp_path_factory.mktemp("template")
    for name in TEMPLATE_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, copy / name)
    return copy


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


@pytest.fixture(scope="session")
def released_template(tmp_path_factory) -> Path:
    """A clone with the release tags `nox -s tags` makes. When the working tree's template differs from the newest
    release, it is committed and tagged as that release: the version under test is what the tree holds."""
    template = clone(tmp_path_factory.mktemp("released") / "template", "--no-tags")
    releases = noxfile.releases((REPO_ROOT / "CHANGELOG.md").read_text())
    assert noxfile.create_release_tags(template) == [version for version, _ in reversed(releases)]
    newest = releases[0][0]
    for name in TEMPLATE_FILES:
        target = template / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    git(template, "add", "--all")
    if git(template, "diff", "--cached", "--name-only").strip():
        git(template, "commit", "--quiet", "-m", "the working tree")
    if git(template, "diff", "--name-only", newest, "HEAD", "--", *TEMPLATE_FILES).strip():
        git(template, "tag", "--force", newest)
    return template


Render = Callable[..., Path]


@pytest.fixture(scope="session")
def render(template_dir, tmp_path_factory) -> Render:
    """render(answers, name=..., tasks=False) -> destination; hooks run only with tasks=True."""

    def _render(answers: dict, name: str = "project", tasks: bool = False) -> Path:
        destination = tmp_path_factory.mktemp(name) / "project"
        copier.run_copy(
            str(template_dir),
            destination,
            data=answers,
            defaults=True,
            unsafe=True,
            skip_tasks=not tasks,
            quiet=True,
        )
        return destination

    return _render


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
    """Run a generated project's own test suite with the interpreter running this one; deprecations that the
    package's code causes are errors.

    One torch thread: the tiny models gain nothing from more, and two suites can then share two cores."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *deprecations_are_errors(project)]
    return subprocess.run(
        [*pytest, *pytest_args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


def run_generated_test_suites(projects: dict[str, Path], *pytest_args: str) -> dict[str, subprocess.CompletedProcess]:
    """Each project's own test suite, two at a time (each runs in its own process)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = {name: pool.submit(run_generated_tests, project, *pytest_args) for name, project in projects.items()}
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


def ruff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, cwd=cwd)
