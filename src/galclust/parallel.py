"""Process-parallel map for galclust's CPU stages (scan, simulate): ordered, lazy, Ctrl-C safe."""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")
_WINDOW = 4  # items in flight per worker: enough to keep workers busy, bounded memory


def _start_worker() -> None:
    """Leave Ctrl-C to the main process, which keeps the journal and ends the pool cleanly,
    and keep torch to one thread: a forked child that enters an OpenMP region the parent
    already started hangs (as PyTorch's own DataLoader workers do)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


class _Ready(Generic[_R]):
    """A result computed in this process, with the ``get`` of a pool's ``AsyncResult``."""

    def __init__(self, value: _R) -> None:
        self.value = value

    def get(self) -> _R:
        return self.value


def ordered_map(func: Callable[[_T], _R], items: Iterable[_T], workers: int) -> Iterator[_R]:
    """``map`` in ``workers`` processes, in order, with a bounded number of items in flight.

    This process is one of the workers: it keeps a pool of ``workers - 1`` supplied with two
    items each and takes the next item itself whenever the pool is that busy, so ``workers``
    matches the cores in use and nobody waits long at the end. Unlike
    ``Pool.imap``, which queues its whole input at once, this pulls ``items`` lazily, so a
    generator of millions of paths is never held in memory.
    """
    iterator = iter(items)
    try:
        first = next(iterator)
    except StopIteration:
        return  # nothing to do: no pool to start
    everything = itertools.chain([first], iterator)
    if workers <= 1:
        yield from map(func, everything)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers - 1, initializer=_start_worker) as pool:
        pending: deque[multiprocessing.pool.AsyncResult[_R] | _Ready[_R]] = deque()
        for item in everything:
            queued = sum(1 for p in pending if not isinstance(p, _Ready) and not p.ready())
            if queued >= 2 * (workers - 1):  # the pool has enough to do: take this one here
                pending.append(_Ready(func(item)))
            else:
                pending.append(pool.apply_async(func, (item,)))
            while len(pending) >= _WINDOW * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
