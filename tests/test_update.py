"""`copier update` from a tagged version of the template to a newer one keeps every line the user wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import copier
import pytest
import yaml

from helpers import (
    EVERY_RELEASE,
    FAMILY_KNOBS,
    MODELING,
    NEW,
    NEW_DOCSTRING,
    NEW_README_HEADING,
    NEW_VARIANCE,
    OLD,
    OLD_VARIANCE,
    REPO_ROOT,
    git,
    make_tagged_template,
)


@pytest.fixture(scope="module")
def tagged_template(template_dir, tmp_path_factory) -> Path:
    return make_tagged_template(template_dir, tmp_path_factory.mktemp("tagged") / "template")


def render_old_version(tagged_template: Path, destination: Path, **answers) -> None:
    data = {"smoke_test": False, **answers}
    copier.run_copy(
        str(tagged_template), destination, vcs_ref=OLD, data=data, defaults=True, skip_tasks=True, quiet=True
    )


def commit_everything(repository: Path, message: str) -> None:
    git(repository, "init", "--quiet")
    git(repository, "add", "--all")
    git(repository, "commit", "--quiet", "-m", message)


def copy_old_version(tagged_template: Path, destination: Path, **answers) -> Path:
    render_old_version(tagged_template, destination, **answers)
    commit_everything(destination, "generated")
    return destination


def commit_user_edits(project: Path, edits: dict[str, tuple[str, str]]) -> list[str]:
    """Apply {file: (old text, new text)} edits, commit them, and return every line the user wrote."""
    written = []
    for name, (old, new) in edits.items():
        path = project / name
        text = path.read_text()
        assert old in text, f"{old!r} is not in {name}"
        path.write_text(text.replace(old, new, 1))
        written += [line for line in new.splitlines() if line.strip() and line not in old.splitlines()]
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "user edits")
    return written


def update(project: Path, **answers) -> None:
    copier.run_update(project, vcs_ref=NEW, data=answers, defaults=True, overwrite=True, unsafe=True, quiet=True)


def assert_every_user_line_survives(project: Path, user_lines: list[str]) -> None:
    text = "\n".join(path.read_text() for path in project.rglob("*.py") if ".git" not in path.parts)
    missing = [line for line in user_lines if line not in text]
    assert not missing, f"user lines lost by the update: {missing}"


USER_MLP_COMMENT = "        # Ported from the paper's equation 3; keep the gate first"
MLP_RETURN = "        return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))"


def test_an_edit_far_from_the_template_change_survives_and_the_change_merges(tagged_template, tmp_path, capfd):
    project = copy_old_version(tagged_template, tmp_path / "project")
    user_lines = commit_user_edits(project, {MODELING: (MLP_RETURN, f"{USER_MLP_COMMENT}\n{MLP_RETURN}")})

    update(project)

    modeling = (project / MODELING).read_text()
    assert NEW_DOCSTRING in modeling and NEW_VARIANCE in modeling
    assert USER_MLP_COMMENT in modeling
    assert "<<<<<<<" not in modeling
    assert_every_user_line_survives(project, user_lines)
    assert "update: no conflicts" in capfd.readouterr().out


def test_an_edit_on_the_changed_lines_becomes_a_conflict_holding_both_sides(tagged_template, tmp_path, capfd):
    project = copy_old_version(tagged_template, tmp_path / "project")
    user_variance = "        variance = hidden_states.float().pow(2).mean(-1, keepdim=True)  # fp32 like the original"
    unformatted = "CHECKED_BY_HAND = {'unformatted':1}\n"
    user_lines = commit_user_edits(
        project,
        {
            MODELING: (OLD_VARIANCE, user_variance),
            "src/brand_new_bert/configuration_brand_new_bert.py": ('__all__ = ["', f'{unformatted}\n\n__all__ = ["'),
        },
    )

    update(project)

    modeling = (project / MODELING).read_text()
    conflict = modeling[modeling.index("<<<<<<< before updating") : modeling.index(">>>>>>> after updating")]
    assert user_variance in conflict and NEW_VARIANCE in conflict
    assert_every_user_line_survives(project, user_lines)
    output = capfd.readouterr().out
    conflict_line = modeling.splitlines().index("<<<<<<< before updating") + 1
    assert f"  {MODELING}:{conflict_line}" in output
    assert "nothing was formatted" in output
    # With a conflict left, nothing is formatted: the user's unformatted line stays as written
    assert unformatted in (project / "src/brand_new_bert/configuration_brand_new_bert.py").read_text()


def test_a_deleted_file_stays_deleted_and_a_new_template_file_appears(tagged_template, tmp_path):
    project = copy_old_version(tagged_template, tmp_path / "project")
    (project / "tests" / "test_configuration_brand_new_bert.py").unlink()
    git(project, "commit", "--quiet", "-am", "drop the configuration tests")

    update(project)

    assert not (project / "tests" / "test_configuration_brand_new_bert.py").exists()
    assert (project / "CONTRIBUTING.md").read_text() == "# Contributing to BrandNewBert\n"


def test_a_changed_answer_rerenders_the_files_that_depend_on_it(tagged_template, tmp_path):
    project = copy_old_version(tagged_template, tmp_path / "project")
    user_lines = commit_user_edits(project, {MODELING: (MLP_RETURN, f"{USER_MLP_COMMENT}\n{MLP_RETURN}")})

    update(project, heads=["CausalLM", "SequenceClassification"])

    assert (
        "class BrandNewBertForSequenceClassification(BrandNewBertPreTrainedModel):" in (project / MODELING).read_text()
    )
    init = (project / "src" / "brand_new_bert" / "__init__.py").read_text()
    assert "AutoModelForSequenceClassification: BrandNewBertForSequenceClassification," in init
    assert "SequenceClassification" in (project / ".copier-answers.yml").read_text()
    assert_every_user_line_survives(project, user_lines)


def test_without_conflicts_the_post_update_check_formats_what_it_wrote_and_smoke_tests(
    tagged_template, tmp_path, capfd
):
    project = copy_old_version(tagged_template, tmp_path / "project")
    configuration = "src/brand_new_bert/configuration_brand_new_bert.py"
    commit_user_edits(
        project,
        {
            MODELING: ("__all__ = [\n", "CHECKED_BY_HAND = {'a':1}\n\n\n__all__ = [\n"),
            configuration: ('__all__ = ["', "LEFT_AS_WRITTEN = {'b':2}\n\n\n__all__ = [\""),
        },
    )
    git(project, "config", "user.name", "Porter")  # so that nothing depends on a global identity

    update(project, smoke_test=True)

    output = capfd.readouterr().out
    assert "update: no conflicts; 1 Python file(s) written by the update" in output
    assert "format: ruff format" in output and "smoke test passed" in output
    # The update wrote the modeling file, which is formatted; it left the configuration as the user wrote it
    assert 'CHECKED_BY_HAND = {"a": 1}' in (project / MODELING).read_text()
    assert "LEFT_AS_WRITTEN = {'b':2}" in (project / configuration).read_text()


def renamed_files(
    template_repo: Path, old_ref: str, new_ref: str, answers: dict, workspace: Path
) -> list[tuple[str, str]]:
    """The generated files git sees renamed between the renders of two template versions."""
    renders = workspace / "renders"
    for ref in (old_ref, new_ref):
        copier.run_copy(
            str(template_repo), renders / ref, vcs_ref=ref, data=answers, defaults=True, skip_tasks=True, quiet=True
        )
    git(renders / old_ref, "init", "--quiet")
    git(renders / old_ref, "add", "--all")
    git(renders / old_ref, "commit", "--quiet", "-m", "old")
    shutil.move(renders / old_ref / ".git", renders / new_ref / ".git")
    git(renders / new_ref, "add", "--all")
    status = git(renders / new_ref, "diff", "--cached", "--find-renames", "--name-status")
    return [tuple(line.split("\t")[1:3]) for line in status.splitlines() if line.startswith("R")]


def renames_without_migration(template_repo: Path, old_ref: str, new_ref: str, workspace: Path) -> list[str]:
    """Renames between two tags that renames.yml, with both migrations for their version, does not cover."""
    registry = yaml.safe_load(git(template_repo, "show", f"{new_ref}:hooks/migrations/renames.yml"))["renames"] or []
    copier_yml = yaml.safe_load(git(template_repo, "show", f"{new_ref}:copier.yml"))
    stages = {
        (str(migration["version"]), stage)
        for migration in copier_yml.get("_migrations", [])
        if isinstance(migration, dict) and "version" in migration and "rename_files.py" in str(migration["command"])
        for stage in ("before", "after")
        if f"--stage={stage}" in str(migration["command"])
    }
    # A version's renames need both stages: the merge before Copier's, the move after it
    migrated_versions = {version for version, stage in stages if (version, "before") in stages and stage == "after"}
    missing = []
    # Each family as a package, and a checkout's layout (its files move as a layout, whatever the family)
    cases = {family: {"family": family} for family in FAMILY_KNOBS} | {"in-tree": {"layout": "transformers"}}
    for case, knobs in cases.items():
        answers = {**knobs, "model_name": "Renamed", "package_name": "renamed", "model_type": "renamed"}
        for old, new in renamed_files(template_repo, old_ref, new_ref, answers, workspace / case):
            covered = any(
                entry["from"].format(package_name="renamed", model_type="renamed") == old
                and entry["to"].format(package_name="renamed", model_type="renamed") == new
                and str(entry["version"]) in migrated_versions
                for entry in registry
            )
            if not covered:
                missing.append(f"{case}: {old} -> {new}")
    return sorted(set(missing))


def test_every_rename_between_the_template_tags_has_a_migration(released_template, tmp_path):
    """Released tags never change, so the default sessions check the newest release against HEAD, which every
    release was when it was made; TEST_EVERY_RELEASE=1 (`nox -s every_release`) checks each pair of releases."""
    tags = git(released_template, "tag", "--sort=version:refname").split()
    assert len(tags) >= 4, f"the release tags are missing: {tags}"
    pairs = list(zip(tags, tags[1:], strict=False)) + [(tags[-1], "HEAD")]
    if not EVERY_RELEASE:
        pairs = pairs[-1:]
    for index, (old_ref, new_ref) in enumerate(pairs):
        assert renames_without_migration(released_template, old_ref, new_ref, tmp_path / str(index)) == []


def test_the_rename_check_finds_a_rename_without_migration(template_dir, tmp_path):
    repo = make_tagged_template(template_dir, tmp_path / "template", rename_readme=True, migration=False)
    missing = renames_without_migration(repo, OLD, NEW, tmp_path / "check")
    assert missing == sorted(f"{family}: README.md -> docs/README.md" for family in FAMILY_KNOBS)


def test_a_renamed_file_keeps_the_user_edits_under_its_new_name(template_dir, tmp_path):
    repo = make_tagged_template(template_dir, tmp_path / "template", rename_readme=True, migration=True)
    assert renames_without_migration(repo, OLD, NEW, tmp_path / "check") == []
    project = copy_old_version(repo, tmp_path / "project")
    user_note = "Our benchmark numbers live in the team wiki."
    commit_user_edits(project, {"README.md": ("## Install\n", f"## Install\n\n{user_note}\n")})

    update(project)

    assert not (project / "README.md").exists()
    moved = (project / "docs" / "README.md").read_text()
    assert user_note in moved and NEW_README_HEADING in moved and "<<<<<<<" not in moved
    assert git(project, "status", "--porcelain", "--", "README.md", "docs/README.md").splitlines() == [
        "R  README.md -> docs/README.md"
    ]


def two_models_in_one_repository(tagged_template: Path, repository: Path) -> list[Path]:
    for name in ("first", "second"):
        render_old_version(tagged_template, repository / "models" / name, model_name=f"{name.title()}Model")
    commit_everything(repository, "two generated models")
    return [repository / "models" / name / ".copier-answers.yml" for name in ("first", "second")]


def run_update_models(repository: Path, *answers_files: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Porter", "GIT_AUTHOR_EMAIL": "porter@example.com"}
    env |= {"GIT_COMMITTER_NAME": "Porter", "GIT_COMMITTER_EMAIL": "porter@example.com"}
    command = [
        sys.executable,
        str(REPO_ROOT / "hooks" / "update_models.py"),
        "--vcs-ref",
        NEW,
        *map(str, answers_files),
    ]
    return subprocess.run(command, cwd=repository, capture_output=True, text=True, env=env)


def test_update_models_commits_each_model_separately(tagged_template, tmp_path):
    answers_files = two_models_in_one_repository(tagged_template, tmp_path / "repository")

    result = run_update_models(tmp_path / "repository", *answers_files)

    assert result.returncode == 0, result.stdout + result.stderr
    log = git(tmp_path / "repository", "log", "--format=%s").splitlines()
    assert log[:2] == [
        f"Update SecondModel to copier-transformers-model {NEW}",
        f"Update FirstModel to copier-transformers-model {NEW}",
    ]
    for name in ("first", "second"):
        assert (
            "version 0.2.0"
            in (tmp_path / "repository" / "models" / name / f"src/{name}_model/modeling_{name}_model.py").read_text()
        )


def test_update_models_stops_at_the_first_conflict(tagged_template, tmp_path):
    repository = tmp_path / "repository"
    answers_files = two_models_in_one_repository(tagged_template, repository)
    first_modeling = repository / "models" / "first" / "src" / "first_model" / "modeling_first_model.py"
    first_modeling.write_text(first_modeling.read_text().replace(OLD_VARIANCE, OLD_VARIANCE + "  # user change"))
    git(repository, "commit", "--quiet", "-am", "user change")

    result = run_update_models(repository, *answers_files)

    assert result.returncode == 1
    assert "FirstModel: resolve these conflicts" in result.stdout
    assert "models/first/src/first_model/modeling_first_model.py:" in result.stdout
    assert "== SecondModel" not in result.stdout
    assert git(repository, "log", "-1", "--format=%s").strip() == "user change"


def test_the_min_copier_session_tests_the_version_copier_yml_requires():
    minimum = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())["_min_copier_version"]
    assert f'MIN_COPIER = "{minimum}.0"' in (REPO_ROOT / "noxfile.py").read_text()
