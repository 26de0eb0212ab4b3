"""Training processes started in a fraction of a second, for the tests that kill them.

``python -m sdgdml.train`` spends ~4 s (idle 2-core CPU) importing torch, torchvision, timm and
building DigitsDG before its first step; a test that kills ten runs pays that ten times. A
:class:`TrainForks` server is one process that has done the imports and built DigitsDG once
(and has run no torch computation, so forking it is safe: OpenMP's thread pool does not exist
yet); each :meth:`TrainForks.start` forks it into a real, separate training process that runs
``sdgdml.train.main(argv)``, exactly what ``python -m sdgdml.train`` runs after its imports,
and that a test kills with a real SIGKILL. What the CLI adds (the interpreter's start) is
covered by the tests that run the command itself.

Server protocol (stdin/stdout lines): the client writes an argv as JSON, the server answers
``pid <pid>`` when the child is forked and ``exit <status>`` when it has ended (a signal as its
negative number, like ``Popen.returncode``); one child at a time."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys


def serve() -> None:
    import sdgdml.train as train_mod
    from sdgdml.datasets.digits import build_domains

    build_domains()                             # cached: every child starts with the data
    import torch._dynamo  # noqa: F401  torch.optim imports it on an optimizer's first use (~1.5 s)
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:                            # the training process
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            code = 0
            try:
                train_mod.main(json.loads(line))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                code = 1
            os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(f"exit {code}", flush=True)


class ForkedRun:
    """A forked training process, with the part of ``subprocess.Popen``'s interface the tests
    use (``pid``, ``poll``, ``send_signal``, ``wait``)."""

    def __init__(self, server: subprocess.Popen):
        self._server = server
        self.pid = int(self._line("pid"))
        self.returncode: int | None = None

    def _line(self, kind: str) -> str:
        line = self._server.stdout.readline()
        if not line.startswith(kind + " "):
            raise RuntimeError(f"the training fork server said {line!r}, expected {kind!r}")
        return line.split()[1]

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._server.stdout], [], [], 0)[0]:
            self.returncode = int(self._line("exit"))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = int(self._line("exit"))
        return self.returncode


class TrainForks:
    """The fork server (a context manager); :meth:`start` forks one training process."""

    def __init__(self, env: dict):
        self._server = subprocess.Popen([sys.executable, __file__], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self._server.stdout.readline().strip() != "ready":
            raise RuntimeError("the training fork server did not start")

    def start(self, argv: list[str]) -> ForkedRun:
        self._server.stdin.write(json.dumps(argv) + "\n")
        self._server.stdin.flush()
        self._last = ForkedRun(self._server)
        return self._last

    def __enter__(self):
        return self

    def stop_last(self) -> None:
        """SIGKILL the last child if it still runs (left by a test that failed midway)."""
        last = getattr(self, "_last", None)
        if last is not None and last.poll() is None:
            last.send_signal(signal.SIGKILL)
            last.wait()

    def __exit__(self, *exc):
        self.stop_last()
        self._server.stdin.close()
        try:
            self._server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._server.send_signal(signal.SIGKILL)
            self._server.wait()


if __name__ == "__main__":
    serve()
