"""Releases users can update to: tags recreated from CHANGELOG.md on any clone, and real projects of every earlier
release (and of the untagged commit the README's quick start used to make) updated to the newest one with the
commands the README gives, every line their owner wrote kept."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
from pathlib import Path

import copier
import pytest
import yaml

from helpers import (
    EVERY_RELEASE,
    REPO_ROOT,
    WITHOUT_THE_REMOTE_CODE_TEST,
    clone,
    git,
    noxfile,
    outside_declared_transformers,
    run_generated_test_suites,
    run_generated_tests,
)

RELEASES = noxfile.releases((REPO_ROOT / "CHANGELOG.md").read_text())
NEWEST = RELEASES[0][0]
# The commit of the README's quick start before 0.4.0: untagged, and recorded as `_src_path: .`
QUICK_START_COMMIT = "a13204a8566c"


def test_every_changelog_release_names_a_commit_of_this_history_in_version_order(tmp_path):
    assert len(RELEASES) >= 4 and all(commit for _, commit in RELEASES), RELEASES
    template = clone(tmp_path / "template", "--no-tags")

    assert noxfile.create_release_tags(template) == [version for version, _ in reversed(RELEASES)]
    assert noxfile.create_release_tags(template) == []  # idempotent
    tags = git(template, "tag", "--sort=version:refname").split()
    assert tags == [version for version, _ in reversed(RELEASES)]
    for version, commit in RELEASES:
        assert git(template, "rev-parse", f"{version}^{{commit}}").startswith(commit)


@pytest.mark.parametrize(
    ("changelog", "problem"),
    [
        ("## 0.2.0\n\n## 0.1.0 (commit {old})\n", "names no commit"),
        ("## 0.1.0 (commit {new})\n\n## 0.2.0 (commit {old})\n", "newest first"),
        ("## 0.2.0 (commit {old})\n\n## 0.1.0 (commit {new})\n", "is not an ancestor"),
        ("## 0.1.0 (commit 0123456789ab)\n", "is not in this clone"),
    ],
)
def test_a_release_without_a_commit_or_out_of_order_is_refused(tmp_path, changelog, problem):
    repository = tmp_path / "repository"
    repository.mkdir()
    git(repository, "init", "--quiet")
    commits = {}
    for name in ("old", "new"):
        (repository / "CHANGELOG.md").write_text(name)
        git(repository, "add", "CHANGELOG.md")
        git(repository, "commit", "--quiet", "-m", name)
        commits[name] = git(repository, "rev-parse", "HEAD").strip()
    (repository / "CHANGELOG.md").write_text(changelog.format(**commits))

    with pytest.raises(ValueError, match=problem):
        noxfile.create_release_tags(repository)
    assert git(repository, "tag").strip() == ""


def test_a_tag_that_points_elsewhere_is_refused(tmp_path):
    template = clone(tmp_path / "template", "--no-tags")
    oldest, _ = RELEASES[-1]
    git(template, "tag", oldest, RELEASES[0][1])

    with pytest.raises(ValueError, match=f"tag {oldest} points at"):
        noxfile.create_release_tags(template)


@pytest.mark.parametrize("version", [version for version, _ in RELEASES])
def test_every_release_renders_and_records_its_version(released_template, tmp_path, version):
    destination = tmp_path / "project"
    copier.run_copy(str(released_template), destination, vcs_ref=version, defaults=True, skip_tasks=True, quiet=True)

    answers = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert answers["_commit"] == version
    assert (destination / "src" / "brand_new_bert" / "modeling_brand_new_bert.py").is_file()


# ---- Real projects of earlier releases, with their owners' edits, updated as the README says -----------------------

PACKAGE = "src/brand_new_bert"
CONFIGURATION = f"{PACKAGE}/configuration_brand_new_bert.py"
MODELING = f"{PACKAGE}/modeling_brand_new_bert.py"
CONFIGURATION_TESTS = "tests/test_configuration_brand_new_bert.py"
DELETED = "tests/test_tokenization_brand_new_bert.py"
OWN_MODULE = f"{PACKAGE}/attention_analysis.py"
# The user's own module, unformatted and with an unused import: an update must leave it byte for byte
OWN_MODULE_TEXT = (
    "import math\nimport torch\n\n\ndef head_entropy(weights):\n    return -(weights*weights.log()).sum(-1)\n"
)
MLP_ACTIVATION = "        self.act_fn = ACT2FN[config.hidden_act]\n"
# (file, text the user replaces or None to append, their text): a config default, the generated test that checks
# it, a comment and an attribute in the modeling file, and a test of their own in a generated test file
USER_EDITS = [
    (CONFIGURATION, "    hidden_size: int = 4096\n", "    hidden_size: int = 2048  # the paper's base size\n"),
    (CONFIGURATION_TESTS, "    assert config.hidden_size == 4096\n", "    assert config.hidden_size == 2048\n"),
    (
        MODELING,
        MLP_ACTIVATION,
        MLP_ACTIVATION
        + "        # The paper calls this the expansion block (section 3.2)\n"
        + "        self.expansion_ratio = config.intermediate_size / config.hidden_size\n",
    ),
    (
        CONFIGURATION_TESTS,
        None,
        "\n\ndef test_the_expansion_ratio_follows_the_config():\n"
        "    assert BrandNewBertConfig(hidden_size=64, intermediate_size=256).intermediate_size == 256\n",
    ),
]
# An edit on a line the update changes too: both sides must come back as one conflict block
CONFLICTING_EDIT = (
    "        past_key_values: Cache | None = None,\n        **kwargs: Unpack[TransformersKwargs],\n",
    "        past_key_values: Cache | None = None,  # filled by generate()\n"
    "        **kwargs: Unpack[TransformersKwargs],\n",
)


def commit_everything(project: Path, message: str) -> None:
    if not (project / ".git").exists():
        git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", message)


def make_user_edits(project: Path, conflicting: bool) -> list[str]:
    """Edit as a porter does, commit, and return every line they wrote."""
    edits = list(USER_EDITS)
    if conflicting:
        edits.append((MODELING, *CONFLICTING_EDIT))
    written = []
    for name, old, new in edits:
        path = project / name
        text = path.read_text()
        if old is None:
            path.write_text(text + new)
        else:
            assert old in text, f"{old!r} is not in {name}"
            path.write_text(text.replace(old, new, 1))
        written += [line for line in new.splitlines() if line.strip() and line not in (old or "").splitlines()]
    (project / OWN_MODULE).write_text(OWN_MODULE_TEXT)
    (project / DELETED).unlink()
    commit_everything(project, "the porter's edits")
    return written


def readme_update_command() -> list[str]:
    """The update command of the README's "Updating a generated project"."""
    readme = (REPO_ROOT / "README.md").read_text()
    command = re.search(r"^(copier update --trust --defaults)\b", readme, re.MULTILINE)
    assert command, "the README gives no `copier update --trust --defaults` command"
    return command.group(1).split()


def environment_with_this_python() -> dict[str, str]:
    """The smoke test runs in the `python` on PATH: this interpreter's, which has torch and Transformers."""
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def update_as_the_readme_says(project: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *readme_update_command()]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, env=environment_with_this_python())


def conflict_starts(project: Path) -> list[str]:
    starts = []
    for path in sorted(project.rglob("*")):
        if path.is_file() and ".git" not in path.parts:
            lines = path.read_text(errors="replace").splitlines()
            relative = path.relative_to(project)
            starts += [f"{relative}:{n}" for n, line in enumerate(lines, start=1) if line.startswith("<<<<<<< ")]
    return starts


def assert_updated_keeping_every_user_line(project: Path, result: subprocess.CompletedProcess, user_lines: list[str]):
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == NEWEST
    text = "\n".join(path.read_text() for path in project.rglob("*.py") if ".git" not in path.parts)
    assert [line for line in user_lines if line not in text] == [], output
    assert (project / OWN_MODULE).read_text() == OWN_MODULE_TEXT, "the update touched the user's own module"
    assert not (project / DELETED).exists(), "a file the user deleted came back"
    messages = [line for line in result.stdout.splitlines() if line.startswith("[copier-transformers-model]")]
    assert len(messages) == len(set(messages)), f"a message printed twice: {messages}"
    return output


# The projects users really have: those of the first releases (0.3.0's with a conflicting edit), the README's
# untagged quick start commit, and the release before the newest, which most updates start from; each earlier release
# too where TEST_EVERY_RELEASE=1 (`nox -s every_release`; each adds a project to update and test)
FIRST_RELEASES = ["0.1.0", "0.2.0", "0.3.0"]
EARLIER_RELEASES = [version for version, _ in reversed(RELEASES[1:])]
ORIGINS = [
    version for version in EARLIER_RELEASES if EVERY_RELEASE or version in FIRST_RELEASES or version == RELEASES[1][0]
] + [QUICK_START_COMMIT]


@pytest.fixture(scope="module")
def updated_projects(released_template, tmp_path_factory) -> dict[str, tuple]:
    """A project from each origin, edited by its owner (the 0.3.0 one also on a line the update changes), updated to
    the newest release with the README's command, then the project's own suite where no conflict is left:
    {origin: (project, update, lines the user wrote, suite or None)}."""
    untagged = clone(tmp_path_factory.mktemp("quick-start") / "template", "--no-tags")
    projects = {}
    for origin in ORIGINS:
        project = tmp_path_factory.mktemp(f"from-{origin}") / "brand-new-bert"
        if origin == QUICK_START_COMMIT:
            # `copier copy --vcs-ref HEAD . ../brand-new-bert` in a clone without tags, then the command the hook
            # prints now to record the template by its absolute path
            subprocess.run(
                [sys.executable, "-m", "copier", "copy", "--defaults", "--skip-tasks", "--quiet"]
                + ["--vcs-ref", origin, ".", str(project)],
                cwd=untagged,
                check=True,
                capture_output=True,
            )
            answers_file = project / ".copier-answers.yml"
            assert yaml.safe_load(answers_file.read_text())["_src_path"] == "."
            answers_file.write_text(
                answers_file.read_text().replace("_src_path: .", f"_src_path: {released_template}")
            )
        else:
            copier.run_copy(
                str(released_template), project, vcs_ref=origin, defaults=True, skip_tasks=True, quiet=True
            )
        commit_everything(project, "Generate the model from copier-transformers-model")
        projects[origin] = (project, make_user_edits(project, conflicting=origin == "0.3.0"))
    # Two at a time, one torch thread each (the smoke test and the suites gain nothing from more)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        updates = {
            origin: pool.submit(update_as_the_readme_says, project) for origin, (project, _) in projects.items()
        }
        results = {origin: update.result() for origin, update in updates.items()}
    clean = {origin: project for origin, (project, _) in projects.items() if not conflict_starts(project)}
    # The remote-code loading test depends on the package layout, which the answer sets' suites check
    suites = run_generated_test_suites(clean, *WITHOUT_THE_REMOTE_CODE_TEST)
    return {
        origin: (project, results[origin], user_lines, suites.get(origin))
        for origin, (project, user_lines) in projects.items()
    }


@pytest.mark.parametrize("origin", [origin for origin in ORIGINS if origin != "0.3.0"])
def test_a_project_updates_to_the_newest_release_keeping_every_user_line_and_passes_its_tests(
    updated_projects, origin
):
    project, result, user_lines, suite = updated_projects[origin]

    output = assert_updated_keeping_every_user_line(project, result, user_lines)

    assert conflict_starts(project) == []
    assert "update: no conflicts" in output and "smoke test passed" in output
    assert "cache: Cache | None = None," in (project / MODELING).read_text()
    assert suite.returncode == 0, suite.stdout[-6000:] + suite.stderr[-3000:]
    assert " passed" in suite.stdout and " failed" not in suite.stdout


def test_a_conflict_is_reported_once_by_file_and_line_and_nothing_is_formatted(updated_projects):
    project, result, user_lines, _ = updated_projects["0.3.0"]

    output = assert_updated_keeping_every_user_line(project, result, user_lines)

    starts = conflict_starts(project)
    assert len(starts) >= 1
    reported = [line.strip() for line in result.stdout.splitlines() if re.fullmatch(r"  \S+:\d+", line)]
    assert reported == starts, output
    assert f"update: {len(starts)} conflict(s) to resolve" in output
    assert "smoke test" not in output and "format:" not in output
    modeling = (project / MODELING).read_text()
    block = modeling[modeling.index("<<<<<<< ") : modeling.index(">>>>>>> ")]
    assert "# filled by generate()" in block and "cache: Cache | None = None," in block


def test_the_update_formats_only_what_it_wrote_and_deletes_no_user_code(released_template, tmp_path):
    project = tmp_path / "brand-new-bert"
    copier.run_copy(str(released_template), project, vcs_ref="0.3.0", defaults=True, skip_tasks=True, quiet=True)
    commit_everything(project, "generated")
    generated = sorted(str(path.relative_to(project)) for path in (project / "src").rglob("*.py"))
    # Unformatted code of the user's at the end of every generated module (after `__all__` or the main guard, which
    # the template leaves alone), and an unused import in the modeling file
    for name in generated:
        path = project / name
        path.write_text(path.read_text() + "\n\nUSER_TABLE = {'a':1}\n")
    modeling = project / MODELING
    modeling.write_text(modeling.read_text().replace("import torch\n", "import math\nimport torch\n", 1))
    (project / OWN_MODULE).write_text(OWN_MODULE_TEXT)
    commit_everything(project, "user code")

    result = update_as_the_readme_says(project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert conflict_starts(project) == [], "the test's user lines now conflict with the update: move them"
    written = set(git(project, "diff", "--name-only", "HEAD").split())
    assert MODELING in written and set(generated) - written, "the update should write some modules and not others"
    for name in generated:
        expected = 'USER_TABLE = {"a": 1}' if name in written else "USER_TABLE = {'a':1}"
        assert expected in (project / name).read_text(), name
    assert "import math\n" in modeling.read_text(), "the update deleted an import the user wrote"
    assert (project / OWN_MODULE).read_text() == OWN_MODULE_TEXT


def test_update_models_brings_two_models_of_one_repository_to_the_newest_release(released_template, tmp_path):
    repository = tmp_path / "repository"
    for name in ("first", "second"):
        copier.run_copy(
            str(released_template),
            repository / "models" / name,
            vcs_ref="0.3.0",
            data={"model_name": f"{name.title()}Model", "tokenizer": "none"},
            defaults=True,
            skip_tasks=True,
            quiet=True,
        )
    commit_everything(repository, "two generated models")
    own_module = repository / "models" / "first" / "src" / "first_model" / "attention_analysis.py"
    own_module.write_text(OWN_MODULE_TEXT)
    commit_everything(repository, "a module of the user's")
    env = environment_with_this_python() | {"GIT_AUTHOR_NAME": "Porter", "GIT_AUTHOR_EMAIL": "porter@example.com"}
    env |= {"GIT_COMMITTER_NAME": "Porter", "GIT_COMMITTER_EMAIL": "porter@example.com"}
    answers_files = [f"models/{name}/.copier-answers.yml" for name in ("first", "second")]

    result = subprocess.run(
        [sys.executable, str(released_template / "hooks" / "update_models.py"), *answers_files],
        cwd=repository,
        capture_output=True,
        text=True,
        env=env,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    log = git(repository, "log", "--format=%s").splitlines()
    assert log[:2] == [
        f"Update {name} to copier-transformers-model {NEWEST}" for name in ("SecondModel", "FirstModel")
    ]
    assert own_module.read_text() == OWN_MODULE_TEXT
    # Each model's post-update check smoke-tested it (the updated suites run in the tests above)
    assert result.stdout.count("smoke test passed") == 2, result.stdout
    for name in ("first", "second"):
        modeling = repository / "models" / name / f"src/{name}_model/modeling_{name}_model.py"
        assert "cache: Cache | None = None," in modeling.read_text()


def test_a_qefficient_decoder_updates_keeping_the_cache_argument_of_its_transformers_range(
    released_template, tmp_path
):
    newest = tmp_path / "newest"
    copier.run_copy(
        str(released_template), newest, data={"qefficient": True}, defaults=True, skip_tasks=True, quiet=True
    )
    if reason := outside_declared_transformers(newest):
        pytest.skip(reason)  # the session of that range (qefficient_pin) runs it
    project = tmp_path / "brand-new-bert"
    copier.run_copy(
        str(released_template),
        project,
        vcs_ref="0.3.0",
        data={"qefficient": True},
        defaults=True,
        skip_tasks=True,
        quiet=True,
    )
    commit_everything(project, "Generate the model from copier-transformers-model")
    user_lines = make_user_edits(project, conflicting=False)

    result = update_as_the_readme_says(project)

    output = assert_updated_keeping_every_user_line(project, result, user_lines)
    assert conflict_starts(project) == []
    assert "past_key_values: Cache | None = None," in (project / MODELING).read_text()
    assert '"transformers>=5.5.4,<5.24",' in (project / "pyproject.toml").read_text()
    assert "smoke test passed" in output
    suite = run_generated_tests(project)
    assert suite.returncode == 0, suite.stdout[-6000:] + suite.stderr[-3000:]
