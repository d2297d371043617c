"""The warm `python` the tests run generated suites and hooks with behaves as the real interpreter does."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warm_python import ENABLED, warm_python_command

pytestmark = pytest.mark.skipif(not ENABLED, reason="WARM_PYTHON=0: every run uses the real interpreter")

# What tells a fork of the server from a fresh interpreter
PRELOADED = "import sys; print('transformers.modeling_utils' in sys.modules)"


def run(*args: str, cwd: Path | None = None, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*warm_python_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def test_a_run_is_a_fork_that_has_transformers_imported(tmp_path):
    assert run("-c", PRELOADED, cwd=tmp_path).stdout == "True\n"


def test_exit_status_output_and_input_are_the_programs(tmp_path):
    code = "import sys; print(sys.argv, sys.stdin.read()); print('to stderr', file=sys.stderr); sys.exit(3)"
    result = run("-c", code, "first", "second", cwd=tmp_path, input="typed")
    assert (result.returncode, result.stdout, result.stderr) == (3, "['-c', 'first', 'second'] typed\n", "to stderr\n")


def test_an_uncaught_exception_prints_the_programs_traceback_and_exits_1(tmp_path):
    result = run("-c", "raise ValueError('boom')", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr
        == 'Traceback (most recent call last):\n  File "<string>", line 1, in <module>\nValueError: boom\n'
    )


def test_a_message_in_system_exit_goes_to_stderr_with_status_1(tmp_path):
    result = run("-c", "raise SystemExit('no config')", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, "no config\n")


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL])
def test_a_program_killed_by_a_signal_kills_the_client_with_it(tmp_path, signal_number):
    result = run("-c", f"import os; os.kill(os.getpid(), {int(signal_number)})", cwd=tmp_path)
    assert result.returncode == -signal_number


def test_the_run_has_the_clients_resource_limits_and_umask(tmp_path):
    def small_files_and_private_umask():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        os.umask(0o077)

    code = "import os; open('small', 'wb').write(b'x'); open('large', 'wb').write(bytes(100_000))"
    result = run("-c", code, cwd=tmp_path, preexec_fn=small_files_and_private_umask)
    assert result.returncode == 1 and result.stderr.endswith("OSError: [Errno 27] File too large\n"), result.stderr
    assert (tmp_path / "small").stat().st_mode & 0o777 == 0o600


def test_a_module_a_script_and_code_find_what_the_real_interpreter_finds(tmp_path):
    (tmp_path / "local_module.py").write_text("import sys\nprint(__name__, sys.argv)\n")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "tool.py").write_text("import helper\nprint(__name__, helper.NAME)\n")
    (scripts / "helper.py").write_text("NAME = 'helper beside the script'\n")
    library = tmp_path / "library"
    library.mkdir()
    (library / "on_pythonpath.py").write_text("VALUE = 42\n")
    env = {**os.environ, "PYTHONPATH": str(library)}
    for python in (warm_python_command(), [sys.executable]):
        cases = [
            (["-m", "local_module", "x"], f"__main__ ['{tmp_path / 'local_module.py'}', 'x']\n"),
            ([str(scripts / "tool.py")], "__main__ helper beside the script\n"),
            (["-c", "import on_pythonpath, os; print(on_pythonpath.VALUE, os.getcwd())"], f"42 {tmp_path}\n"),
        ]
        for args, expected in cases:
            result = subprocess.run([*python, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert (result.returncode, result.stdout) == (0, expected), (python, args, result.stderr)


def test_the_environment_and_warning_options_are_the_runs(tmp_path):
    env = {**os.environ, "A_VARIABLE_OF_THIS_RUN": "yes", "PYTHONWARNINGS": "error::UserWarning"}
    code = "import os, warnings; print(os.environ['A_VARIABLE_OF_THIS_RUN']); warnings.warn('w', DeprecationWarning)"
    result = run("-W", "error::DeprecationWarning", "-c", code, cwd=tmp_path, env=env)
    assert (result.returncode, result.stdout) == (1, "yes\n")
    assert result.stderr.endswith("DeprecationWarning: w\n")
    result = run("-c", "import warnings; warnings.warn('u')", cwd=tmp_path, env=env)
    assert result.returncode == 1 and result.stderr.endswith("UserWarning: u\n")


def test_what_a_fork_would_not_reproduce_runs_in_the_real_interpreter(tmp_path):
    shadowing = tmp_path / "shadowing"
    (shadowing / "transformers").mkdir(parents=True)
    (shadowing / "transformers" / "__init__.py").write_text("print('the checkouts own transformers')\n")
    checkout = tmp_path / "checkout"
    (checkout / "src" / "transformers").mkdir(parents=True)
    (checkout / "src" / "transformers" / "__init__.py").write_text("")
    cases = [
        (["-X", "utf8", "-c", PRELOADED], tmp_path, {}),
        (["-c", PRELOADED], tmp_path, {"HF_HOME": str(tmp_path / "another-home")}),
        (["-c", PRELOADED], checkout, {}),
    ]
    for args, cwd, variables in cases:
        result = run(*args, cwd=cwd, env={**os.environ, **variables})
        assert (result.returncode, result.stdout) == (0, "False\n"), (args, variables, result.stderr)
    result = run("-c", "import transformers", cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(shadowing)})
    assert (result.returncode, result.stdout) == (0, "the checkouts own transformers\n"), result.stderr


def test_a_client_that_goes_away_takes_its_run_with_it(tmp_path):
    marker = tmp_path / "still-running"
    code = (
        f"import time, pathlib\nfor _ in range(100):\n    time.sleep(0.1)\n    pathlib.Path({str(marker)!r}).touch()"
    )
    client = subprocess.Popen([*warm_python_command(), "-c", code], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.kill()
    client.wait()
    time.sleep(0.5)
    marker.unlink()
    time.sleep(0.5)
    assert not marker.exists(), "the run went on after its client was killed"
