"""The Transformers window: what generated projects declare is what the template's sessions test."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from helpers import REPO_ROOT, declared_transformers, noxfile


def lowest_version(requirement: Requirement) -> Version:
    (lower,) = (spec for spec in requirement.specifier if spec.operator == ">=")
    return Version(lower.version)


@pytest.fixture(scope="module")
def declared(render) -> dict[str, Requirement]:
    """The Transformers requirement of a default package and of a decoder with QEfficient files."""
    return {
        "default": declared_transformers(render({}, name="window-default")),
        "qefficient": declared_transformers(render({"qefficient": True}, name="window-qefficient")),
    }


def test_the_oldest_session_tests_the_lowest_release_projects_declare(declared):
    assert lowest_version(declared["default"]) == Version(noxfile.OLDEST_TRANSFORMERS)


def test_ci_pins_a_release_the_projects_declare_and_newest_moves_inside_their_range(declared):
    pinned = noxfile.pinned_version("transformers")
    assert declared["default"].specifier.contains(pinned), (pinned, str(declared["default"]))
    requirements = (REPO_ROOT / "requirements-dev.txt").read_text().splitlines()
    (template_requirement,) = (
        requirement
        for requirement in (Requirement(line) for line in requirements if line and not line.startswith(("#", "-c ")))
        if requirement.name == "transformers"
    )
    assert template_requirement.specifier == declared["default"].specifier


def test_the_qefficient_sessions_test_both_ends_of_its_range(declared):
    lowest, newest = noxfile.QEFFICIENT_TRANSFORMERS
    assert lowest_version(declared["qefficient"]) == Version(lowest)
    assert declared["qefficient"].specifier.contains(newest)
    # 5.24 renamed the cache argument: no release runs both variants' code
    assert not declared["qefficient"].specifier.contains(noxfile.OLDEST_TRANSFORMERS)
    assert not declared["default"].specifier.contains(newest)


def test_every_package_whose_version_changes_results_is_pinned_exactly():
    pinned = {noxfile.pinned_name(line) for line in noxfile.CONSTRAINTS.read_text().splitlines()} - {None}
    wanted = {"transformers", "tokenizers", "huggingface-hub", "safetensors", "accelerate", "copier", "jinja2"}
    wanted |= {"ruff", "black", "isort", "transformers-mlinter", "hypothesis", "nbformat", "pytest", "torch"}
    assert wanted <= pinned, sorted(wanted - pinned)
    for line in noxfile.CONSTRAINTS.read_text().splitlines():
        if noxfile.pinned_name(line):
            assert str(Requirement(line).specifier).startswith("=="), line


def test_the_generated_pyproject_never_pins(declared):
    for requirement in declared.values():
        assert all(spec.operator in (">=", "<") for spec in requirement.specifier), str(requirement)
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text()).get("project", {}).get("dependencies")
    assert dependencies is None  # the template repository's own pyproject holds tool settings only


class RecordingSession:
    """The part of a nox session that `warn_about_newer_releases` uses: canned pip output, recorded warnings."""

    def __init__(self, outputs: dict[tuple[str, ...], str]) -> None:
        self.outputs, self.warnings, self.commands = outputs, [], []

    def run(self, *command: str, silent: bool = False, success_codes: list[int] | None = None) -> str:
        self.commands.append(command[3:])
        return self.outputs[command[3:]]

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def index_listing(name: str, *versions: str) -> str:
    return f"{name} ({versions[0]})\nAvailable versions: {', '.join(versions)}\n  INSTALLED: {versions[-1]}\n"


def test_the_newest_session_says_which_newer_releases_it_could_not_install_and_why():
    kernels_error = (
        "ERROR: Could not find a version that satisfies the requirement kernels<0.20,>=0.19.1 (from transformers) "
        "(from versions: 0.1.7, 0.17.2)\nERROR: No matching distribution found for kernels<0.20,>=0.19.1\n"
    )
    session = RecordingSession(
        {
            ("index", "versions", "transformers"): index_listing("transformers", "5.25.0", "5.24.0"),
            ("install", "--dry-run", "transformers==5.25.0"): "Collecting transformers==5.25.0\n" + kernels_error,
            ("index", "versions", "tokenizers"): index_listing("tokenizers", "0.23.3"),
            ("index", "versions", "huggingface-hub"): "WARNING: the index could not be reached\n",
            ("index", "versions", "copier"): index_listing("copier", "10.0.0", "9.19.1"),
            ("index", "versions", "ruff"): index_listing("ruff", "0.17.6"),
        }
    )
    installed = {"transformers": "5.24.0", "tokenizers": "0.23.3", "huggingface-hub": "2.4.0", "copier": "9.19.1"}

    noxfile.warn_about_newer_releases(session, installed | {"ruff": "0.17.6"})

    assert session.warnings == [
        "transformers 5.25.0 is the index's newest release, but this session tests 5.24.0: Could not find a version "
        "that satisfies the requirement kernels<0.20,>=0.19.1 (from transformers); No matching distribution found "
        "for kernels<0.20,>=0.19.1",
        "could not read the releases of huggingface-hub on the package index",
        "copier 10.0.0 is the index's newest release, but this session tests 9.19.1: requirements-dev.txt asks for "
        "copier<10,>=9.18",
    ]
    # Up-to-date packages cost one listing each; only the installable-looking newer release is tried
    assert [command for command in session.commands if command[0] == "install"] == [
        ("install", "--dry-run", "transformers==5.25.0")
    ]
