"""Ctrl-C and SIGTERM stop a run within seconds, and the run records what it did.

- A terminal's Ctrl-C sends SIGINT to its whole foreground process group. Prefect's
  temporary API server is a child process in that group: it died first, and the run then
  retried "connection refused" for minutes. ``detach_temporary_server`` starts it in a
  session of its own (it still stops with this process: at exit, or by the kernel's
  parent-death signal if this process is killed outright), logging to
  ``PREFECT_HOME/temporary-server.log`` instead of the terminal.
- SIGTERM (what ``kill``, systemd and container runtimes send) becomes ``Terminated``, a
  ``KeyboardInterrupt``, so both take one path: the flow asks its tasks to stop between
  volumes (``stop_requested``), collects what they finished, writes its run manifest
  marked ``interrupted`` and re-raises; the CLI exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading

_STOP = threading.Event()
_TERM = threading.Event()
_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like a Ctrl-C."""


def signals() -> tuple[type[BaseException], ...]:
    """What an interrupted run sees in its main thread: Ctrl-C, or SIGTERM (Prefect's flow
    engine raises ``TerminationSignal`` during a flow run, then hands the signal on to
    ``Terminated``). Prefect is imported only here, after the CLI has pointed its home into
    the workspace."""
    from prefect.exceptions import TerminationSignal

    return KeyboardInterrupt, TerminationSignal


def _is_sigterm(exc: BaseException | None) -> bool:
    return isinstance(exc, Terminated) or getattr(exc, "signal", None) == signal.SIGTERM


def exit_code(exc: BaseException | None) -> int:
    """143 for SIGTERM (``exc`` itself, or one noted earlier: Prefect hands the CLI a plain
    interrupt after its own handling), 130 for Ctrl-C."""
    return 143 if _TERM.is_set() or _is_sigterm(exc) else 130


def note(exc: BaseException) -> None:
    """Remember that ``exc`` was SIGTERM, for ``exit_code``."""
    if _is_sigterm(exc):
        _TERM.set()


def stop_requested() -> bool:
    """True once the run was interrupted: tasks finish the volume at hand and return."""
    return _STOP.is_set()


def request_stop() -> None:
    _STOP.set()


def clear() -> None:
    """Forget an earlier interrupt (tests run several flows in one process)."""
    _STOP.clear()
    _TERM.clear()


def _raise_terminated(signum, frame) -> None:
    _TERM.set()
    raise Terminated(f"signal {signum}")


def install() -> None:
    """At the CLI's entry point, in the main thread: SIGTERM as ``Terminated``, and SIGINT as
    ``KeyboardInterrupt`` even when the parent ignored it (a non-interactive shell starts its
    background jobs, ``cmd &``, with SIGINT ignored, and Python then leaves it ignored: a
    ``kill -INT`` did nothing and the run went on to the end). The temporary server is
    detached by ``detach_temporary_server`` once Prefect may be imported."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _own_session_dying_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the server still stops at this process's exit
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def detach_temporary_server() -> None:
    """Start Prefect's temporary server (``SubprocessASGIServer``) in its own session.

    Prefect has no option for this; its one ``subprocess.Popen`` call gets a ``preexec_fn``
    for the duration of the call that starts the server (nothing else runs then)."""
    from prefect.server.api import server

    original = server.SubprocessASGIServer._run_uvicorn_command
    if getattr(original, "_detached", False):
        return

    def run_detached(self):
        popen = subprocess.Popen

        def detached(*args, **kwargs):
            # the parent-death signal fires when the thread that forked exits: only from the main thread
            if threading.current_thread() is threading.main_thread():
                kwargs.setdefault("preexec_fn", _own_session_dying_with_parent)
            else:
                kwargs.setdefault("start_new_session", True)
            # the server's own log (a shutdown mid-request prints tracebacks) goes to a file, not the terminal
            home = os.environ.get("PREFECT_HOME")
            if home and "stdout" not in kwargs:
                os.makedirs(home, exist_ok=True)
                with open(os.path.join(home, "temporary-server.log"), "ab") as log:
                    return popen(*args, stdout=log, stderr=subprocess.STDOUT, **kwargs)
            return popen(*args, **kwargs)

        server.subprocess.Popen = detached
        try:
            return original(self)
        finally:
            server.subprocess.Popen = popen

    run_detached._detached = True
    server.SubprocessASGIServer._run_uvicorn_command = run_detached
