"""A `python` that starts in milliseconds: each run is a fork of a server that has already imported torch and
Transformers, which a fresh interpreter takes 6-9 s to import, most of a generated suite's or smoke test's time.

`warm_python_command()` starts the server (once per test process) and returns the command to run instead of
`sys.executable`; `warm_python_on_path()` puts it first on PATH as `python`, for the hooks. A run whose arguments,
environment or directory a fork would not reproduce exactly (interpreter options other than -W and -B, an
import-time variable such as HF_HOME that differs from the server's, a PYTHONPATH entry or folder holding its own
copy of a preloaded package, a Transformers checkout) runs the real interpreter instead. WARM_PYTHON=0 always runs
the real one.

Protocol: the client connects to the server's Unix socket and sends its arguments, directory and environment as
JSON with its stdin, stdout and stderr. The server forks a handler that answers "fallback" or forks the run with
those descriptors, then sends its exit status; a client that goes away takes its run with it."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENABLED = os.environ.get("WARM_PYTHON", "1") != "0"
PRELOADED = ["torch", "transformers", "transformers.modeling_utils", "transformers.testing_utils", "pytest", "yaml"]
# Variables that the preloaded libraries read when they are imported: a run must find them as the server did
IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_", "USE_", "CUDA", "MKL_", "KMP_")
READY = b"ready\n"
FALLBACK, RUNNING = b"F", b"R"


def receive_message(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, 8, 3)
    (length,) = struct.unpack("!Q", header)
    payload = b""
    while len(payload) < length:
        chunk = connection.recv(length - len(payload))
        if not chunk:
            raise ConnectionError("the client went away")
        payload += chunk
    return json.loads(payload), fds


def parse_arguments(arguments: list[str]) -> tuple[list[str], dict, list[str]] | None:
    """(warning options, {"code"|"module"|"script": ...}, the program's sys.argv) for the forms a fork can run:
    `[-W spec]... [-B] (-c code | -m module | script) args...`; None for anything else."""
    warning_options: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == "-W" and index + 1 < len(arguments):
            warning_options.append(arguments[index + 1])
            index += 2
        elif argument.startswith("-W") and len(argument) > 2:
            warning_options.append(argument[2:])
            index += 1
        elif argument == "-B":
            index += 1
        elif argument in ("-c", "-m") and index + 1 < len(arguments):
            target, rest = arguments[index + 1], arguments[index + 2 :]
            if argument == "-c":
                return warning_options, {"code": target}, ["-c", *rest]
            return warning_options, {"module": target}, [target, *rest]
        elif argument.startswith("-"):
            return None  # -X, -I, -u, -, an interactive session ...
        else:
            return warning_options, {"script": argument}, arguments[index:]
    return None


def first_path_entry(program: dict, cwd: str) -> str:
    """sys.path[0] as the real interpreter sets it: the script's directory, the directory for -m, "" for -c."""
    if "script" in program:
        return os.path.dirname(os.path.realpath(os.path.join(cwd, program["script"])))
    return cwd if "module" in program else ""


def shadows_a_preloaded_module(directory: str) -> bool:
    """Whether `directory` holds a package or module that the server already imported from elsewhere."""
    names = {name.partition(".")[0] for name in sys.modules}
    return any(
        os.path.exists(os.path.join(directory, name)) or os.path.exists(os.path.join(directory, f"{name}.py"))
        for name in names
    )


def in_a_transformers_checkout(cwd: str) -> bool:
    """A checkout's conftest puts its own src/ first: its `transformers` is not the preloaded one."""
    return any(
        (parent / "src" / "transformers" / "__init__.py").exists() for parent in [Path(cwd), *Path(cwd).parents]
    )


def python_path(environment: dict[str, str]) -> list[str]:
    return [entry for entry in environment.get("PYTHONPATH", "").split(os.pathsep) if entry]


def import_time_environment(environment: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environment.items() if name.startswith(IMPORT_TIME_PREFIXES)}


def reason_to_fall_back(request: dict, server_environment: dict[str, str]) -> str | None:
    parsed = parse_arguments(request["arguments"])
    if parsed is None:
        return "arguments"
    environment, cwd = request["environment"], request["cwd"]
    if any(shadows_a_preloaded_module(entry) for entry in python_path(environment)):
        return "PYTHONPATH shadows a preloaded module"
    if import_time_environment(environment) != import_time_environment(server_environment):
        return "import-time environment"
    if not can_take_limits(request["limits"]):
        return "resource limits"
    if in_a_transformers_checkout(cwd):
        return "Transformers checkout"
    first = first_path_entry(parsed[1], cwd) or cwd
    if shadows_a_preloaded_module(first):
        return "a preloaded module is shadowed"
    return None


def resource_limits() -> dict[str, tuple[int, int]]:
    return {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")}


def can_take_limits(limits: dict[str, list[int]]) -> bool:
    """Whether a fork of this process can set the client's limits: it can lower a hard limit, never raise one."""
    current = resource_limits()
    infinity = resource.RLIM_INFINITY
    return all(
        hard == current[name][1] or current[name][1] == infinity or (hard != infinity and hard <= current[name][1])
        for name, (_, hard) in limits.items()
    )


def exit_status(error: SystemExit) -> int:
    """The status the interpreter exits with for an uncaught SystemExit."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)
    return 1


def run_program(request: dict, fds: list[int], base_path: list[str]) -> None:
    """In the forked child: become the interpreter the client asked for, run its program, and exit."""
    import io
    import runpy
    import threading
    import traceback
    import types
    import warnings

    os.setpgid(0, 0)  # its own group: the handler can stop it together with the processes it starts
    for signal_number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signal_number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    for name, limits in request["limits"].items():
        if tuple(limits) != resource.getrlimit(getattr(resource, name)):
            resource.setrlimit(getattr(resource, name), tuple(limits))
    os.environ.clear()
    os.environ.update(request["environment"])
    warning_options, program, argv = parse_arguments(request["arguments"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), write_through=unbuffered, line_buffering=os.isatty(1)
    )
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace")
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE")) or "-B" in request["arguments"]
    sys.path[:] = [first_path_entry(program, request["cwd"]), *python_path(os.environ), *base_path]
    warnings.resetwarnings()
    for option in [*filter(None, os.environ.get("PYTHONWARNINGS", "").split(",")), *warning_options]:
        warnings._setoption(option)
    if threads := os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(threads))
    status = 0
    try:
        if "code" in program:
            sys.argv = argv
            main = types.ModuleType("__main__")
            sys.modules["__main__"] = main
            exec(compile(program["code"], "<string>", "exec"), main.__dict__)
        elif "module" in program:
            sys.argv = argv
            runpy._run_module_as_main(program["module"], alter_argv=True)
        else:
            sys.argv = argv
            runpy.run_path(program["script"], run_name="__main__")
    except SystemExit as error:
        status = exit_status(error)
    except BaseException as error:
        # Without this function's frame, as the interpreter prints it
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        status = 1
    try:
        threading._shutdown()
        import atexit as exit_handlers

        exit_handlers._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def handle(
    connection: socket.socket, server_environment: dict[str, str], set_by_imports: dict[str, str], base_path: list[str]
) -> None:
    """In a child of the server: run one request and report its status, or tell the client to fall back."""
    request, fds = receive_message(connection)
    if reason_to_fall_back(request, server_environment):
        connection.sendall(FALLBACK)
        return
    connection.sendall(RUNNING)
    pid = os.fork()
    if pid == 0:
        connection.close()
        request["environment"] = {**set_by_imports, **request["environment"]}
        run_program(request, fds, base_path)
    for fd in fds:
        os.close(fd)
    process = os.pidfd_open(pid)
    readable, _, _ = select.select([connection, process], [], [])
    if process not in readable:  # the client went away first: so does its run
        kill_group(pid)
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    with contextlib.suppress(OSError):
        connection.sendall(struct.pack("!i", status))


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def serve(socket_path: str) -> None:
    server_environment = dict(os.environ)
    for name in PRELOADED:
        __import__(name)
    # What the imports set (TORCHINDUCTOR_CACHE_DIR): a fresh interpreter would have set it too
    set_by_imports = {name: value for name, value in os.environ.items() if name not in server_environment}
    # sys.path without the script's folder and PYTHONPATH, which each run brings its own of
    base_path = [entry for entry in sys.path[1:] if entry not in python_path(os.environ)]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    parent = os.getppid()
    while True:
        if not select.select([listener], [], [], 1.0)[0]:
            if os.getppid() != parent:
                return  # the test process ended without stopping the server
            continue
        connection, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                handle(connection, server_environment, set_by_imports, base_path)
            finally:
                os._exit(0)
        connection.close()


def client(socket_path: str, real_python: str, arguments: list[str]) -> None:
    """What the `python` on PATH runs: the program in a fork of the server, or the real interpreter."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
        umask = os.umask(0)
        os.umask(umask)
        request = {
            "arguments": arguments,
            "cwd": os.getcwd(),
            "environment": dict(os.environ),
            "limits": resource_limits(),  # a test's preexec_fn lowers them, as on a full disk
            "umask": umask,
        }
        payload = json.dumps(request).encode()
        socket.send_fds(connection, [struct.pack("!Q", len(payload))], [0, 1, 2])
        connection.sendall(payload)
        answer = connection.recv(1)
    except OSError:
        answer = FALLBACK
    if answer != RUNNING:
        os.execv(real_python, [real_python, *arguments])
    status = b""
    while len(status) < 4:
        chunk = connection.recv(4 - len(status))
        if not chunk:
            sys.exit(f"warm python: the server stopped during `{' '.join(arguments)}`")
        status += chunk
    (code,) = struct.unpack("!i", status)
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # the two a process cannot catch
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


class WarmPython:
    """The server of this test process and a folder with `python` and `python3` that run through it."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="warm-python-"))
        socket_path = str(self.folder / "socket")
        environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        log = self.folder / "server.log"
        with log.open("wb") as errors:
            self.server = subprocess.Popen(
                [sys.executable, __file__, "serve", socket_path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=environment,
            )
        if self.server.stdout.readline() != READY:
            self.server.wait()
            raise RuntimeError(f"the warm python server did not start:\n{log.read_text()[-3000:]}")
        self.bin = self.folder / "bin"
        self.bin.mkdir()
        for name in ("python", "python3"):
            shim = self.bin / name
            shim.write_text(
                f'#!/bin/sh\nexec {sys.executable} -S -E {__file__} client {socket_path} {sys.executable} "$@"\n'
            )
            shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        atexit.register(self.stop)

    def stop(self) -> None:
        self.server.kill()
        self.server.wait()


_warm_python: WarmPython | None = None


def warm_python() -> WarmPython | None:
    global _warm_python
    if ENABLED and _warm_python is None:
        _warm_python = WarmPython()
    return _warm_python


@contextlib.contextmanager
def warm_python_on_path() -> Iterator[None]:
    """`python` on PATH runs through the warm server while the block runs (the hooks' smoke test finds it there)."""
    server = warm_python()
    if server is None:
        yield
        return
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"{server.bin}{os.pathsep}{saved}"
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def warm_python_command() -> list[str]:
    """The command that runs Python like `sys.executable` does, through the warm server where it can."""
    server = warm_python()
    return [str(server.bin / "python")] if server else [sys.executable]


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3], sys.argv[4:])
