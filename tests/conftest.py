"""Fixtures: the template as the working tree holds it, rendered with Copier's API (helpers are in helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import copier
import jinja2
import pytest

from helpers import JINJA_COMPILER_OPTIONS, REPO_ROOT, TEMPLATE_FILES, Render, clone, git, noxfile
from warm_python import warm_python, warm_python_on_path


@pytest.fixture(scope="session", autouse=True)
def python_on_path_is_warm():
    """The hooks' smoke tests and formatters find `python` on PATH: a fork of an interpreter that has imported
    torch and Transformers already (tests/warm_python.py), not one that spends 6-9 s importing them each time."""
    with warm_python_on_path():
        yield
    if server := warm_python():
        server.stop()


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
