"""Child processes of local services: start one and wait until it is ready, stop or kill it.

Every runner in fraud_devtools (Redis, the Kafka broker, stream workers, Spark Connect) uses
these, so ports, start-up waits and shutdowns behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: Callable[[], bool], what: str, seconds: float) -> None:
    """Poll `ready` until it is true; TimeoutError naming `what` after `seconds`. The one
    deadline-wait of the project: runners wait for services with it, tests for outcomes."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds:g} s for {what}")
        time.sleep(0.02)


def stop_signals() -> threading.Event:
    """An event that SIGTERM (a supervisor's stop) and SIGINT (Ctrl-C) set, for a runner's
    command line that supervises its services until stopped. The handlers only set it; the
    runner reads it at its own points (`unless_stopping`, `wait_stopped`): an exception raised
    from a handler could land inside subprocess's own bookkeeping (a SIGTERM during start-up
    once left Popen's wait lock taken, and the supervisor exited 1 with its JVM killed rather
    than stopped)."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping


def unless_stopping(
    ready: Callable[[], bool], stopping: threading.Event | None
) -> Callable[[], bool]:
    """`ready` for a start-up wait that a stop ends: SystemExit(0) once `stopping` is set
    (`start_process` then kills what it started)."""
    if stopping is None:
        return ready

    def checked() -> bool:
        if stopping.is_set():
            raise SystemExit(0)
        return ready()

    return checked


def wait_stopped(
    process: Callable[[], subprocess.Popen[bytes] | None], stopping: threading.Event
) -> None:
    """Until `stopping` is set or the process `process()` gives has ended."""
    while (running := process()) is not None and running.poll() is None:
        if stopping.wait(1):
            return


def start_process(
    command: list[str],
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (output appended to `log`, else discarded) and wait
    until `ready`; RuntimeError naming `what` if the process exits first, TimeoutError if it
    takes too long (then it is killed, not left behind)."""
    with contextlib.ExitStack() as stack:
        out = (
            stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        )  # child keeps its fd
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def started() -> bool:
        if process.poll() is not None:
            where = f"; see {log}" if log else ""
            raise RuntimeError(f"{what} exited with {process.returncode}{where}")
        return ready()

    try:
        wait_until(started, what, timeout)
    except BaseException:
        kill_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM and wait up to `timeout` seconds for a clean exit, then SIGKILL."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process(process)


def pin_process(pid: int, cpus: str) -> None:
    """Keep a running process and every thread of it on `cpus` (taskset's list, "1" or
    "0,1"): the benchmarks keep the measured process alone on one core and the services it
    talks to (stand-ins for other machines) on the other."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap: no shutdown at all."""
    process.kill()
    process.wait(timeout=10)


def port_answers(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


class LocalProcess:
    """A local service's child process (set by the subclass's `start`)."""

    process: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 30) -> float:
        """A clean shutdown (SIGTERM), killed if it does not finish within `timeout` s;
        returns the seconds the process took to exit (0 when none was running)."""
        if self.process is None:
            return 0.0
        started = time.monotonic()
        stop_process(self.process, timeout)
        self.process = None
        return time.monotonic() - started

    def exit_code(self) -> int | None:
        """The process's exit status once it has ended by itself (-N: killed by signal N);
        None while it runs or when none was started."""
        return self.process.poll() if self.process is not None else None

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        if self.process is not None:
            kill_process(self.process)
            self.process = None
