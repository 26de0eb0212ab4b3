"""Progress output that reads well in a terminal and in a Slurm log.

On a terminal (``stream.isatty()``) a :mod:`tqdm` bar is redrawn in place; anywhere else
(a file, a pipe, a Slurm ``.out``) no bar is drawn at all: one plain line every ``interval``
seconds, and one at the end, each with ``done/total``, the percentage, the latest values
passed to :meth:`Progress.update` (loss, lr, ...) and the elapsed time and ETA.

:meth:`Progress.due` says when fresh values would be shown (a line is due, or on a terminal a
bar refresh, every ``TTY_REFRESH_S``), so that a caller reads values from the device only then
(the training loop: ``loggers.RunMonitor``, whose ``loss=`` is the mean since the last line).
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_INTERVAL_S = 30.0     # a line every 30 s: ~120 lines per hour of training in a log
TTY_REFRESH_S = 1.0       # fresh values on a terminal's bar every second


def format_seconds(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Count ``total`` units from ``start``; ``update(n, **values)`` after each unit.

    ``interval``: seconds between lines when the stream is not a terminal. ``disable``: print
    nothing. ``clock``: the time function (tests pass a fake clock)."""

    def __init__(self, total: int, start: int = 0, desc: str = "train", unit: str = "step",
                 interval: float = LOG_INTERVAL_S, stream=None, disable: bool = False,
                 clock=time.monotonic):
        self.total, self.done, self.start = total, start, start
        self.desc, self.unit, self.interval = desc, unit, interval
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.values: dict = {}
        self.disable = disable
        self.t0 = self.last_line = self.last_values = clock()
        self.shown = start            # ``done`` when the last line was printed
        self.bar = None
        if not disable and _is_tty(self.stream):
            self.bar = tqdm(total=total, initial=start, desc=desc, unit=unit, file=self.stream,
                            mininterval=0.5, dynamic_ncols=True)

    def due(self) -> bool:
        """Whether fresh values would be shown now: on a terminal, ``TTY_REFRESH_S`` after the
        last values; elsewhere (also when disabled), when a line is due (``interval``)."""
        if self.bar is not None:
            return self.clock() - self.last_values >= TTY_REFRESH_S
        return self.clock() - self.last_line >= self.interval

    def update(self, n: int = 1, show_line: bool | None = None, **values) -> None:
        """Count ``n`` more units and keep ``values``; ``show_line``: print a line (no
        terminal) now (True), not now (False), or when ``interval`` has passed (None)."""
        self.done += n
        if values:
            self.values.update(values)
            self.last_values = self.clock()
        if self.disable:
            return
        if self.bar is not None:
            self.bar.set_postfix({k: format_value(v) for k, v in self.values.items()},
                                 refresh=False)
            self.bar.update(n)
        elif (self.clock() - self.last_line >= self.interval if show_line is None
              else show_line):
            self._line()

    def line(self) -> str:
        """The status line: 'train 120/400 (30%) loss=0.1234 | 0:12 elapsed, ETA 0:28'."""
        elapsed = self.clock() - self.t0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "?"
        vals = " ".join(f"{k}={format_value(v)}" for k, v in self.values.items())
        return (f"{self.desc} {self.done}/{self.total} {self.unit}s ({pct:.0f}%)"
                f"{' ' + vals if vals else ''} | {format_seconds(elapsed)} elapsed, ETA {eta}")

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line = self.clock()
        self.shown = self.done

    def restart_clock(self) -> None:
        """Time from now (work before the first unit, such as a first evaluation, is not
        part of the rate)."""
        self.t0 = self.last_line = self.clock()

    def close(self) -> None:
        if self.disable:
            return
        if self.bar is not None:
            self.bar.set_postfix({k: format_value(v) for k, v in self.values.items()},
                                 refresh=False)
            self.bar.close()
        elif self.done > self.shown:
            self._line()
        self.disable = True           # closing twice prints once

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
