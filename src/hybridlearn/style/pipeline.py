"""Two threads around the model: one decodes ahead, one encodes behind, each through a bounded
queue (so memory stays flat in the clip length). PyAV releases the GIL while it decodes, scales and
encodes, so both overlap the model's forward passes; order is kept (one producer, one consumer).

Both stop cleanly on an error or Ctrl-C in either thread: the other side is told to stop, the
thread is joined before the files it uses are closed, and the first error is raised in the main
thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.05  # how often a blocked thread looks at its stop flag


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless told to stop first (a bounded queue must not block a thread forever)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def prefetch(make_iter: Callable[[], Iterable[T]], depth: int, name: str = "decode") -> Iterator[T]:
    """Iterate make_iter() in a daemon thread, at most `depth` items ahead of the consumer.
    depth 0: in the calling thread. Closing the returned generator stops and joins the thread
    (the iterator is closed in its own thread, so the files it opened are closed there)."""
    if depth <= 0:
        yield from make_iter()
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        it = iter(make_iter())
        try:
            for item in it:
                if not _put(q, (True, item), stop):
                    return
            _put(q, (False, _END), stop)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            _put(q, (False, e), stop)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    t = threading.Thread(target=run, name=f"hybridlearn-{name}", daemon=True)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if ok:
                yield item
            elif item is _END:
                return
            else:
                raise item
    finally:
        stop.set()
        t.join()


class BackgroundWorker:
    """Calls fn(item) for each submitted item, in order, in one daemon thread; at most `depth`
    items wait. depth 0: fn runs in the caller's thread. An error in fn is raised by the next
    submit() or by finish(); cancel() drops what waits and joins."""

    def __init__(self, fn: Callable[[Any], None], depth: int, name: str = "encode"):
        self.fn, self.depth = fn, int(depth)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._q: queue.Queue = queue.Queue(maxsize=max(self.depth, 1))
        self._t: threading.Thread | None = None
        if self.depth > 0:
            self._t = threading.Thread(target=self._run, name=f"hybridlearn-{name}", daemon=True)
            self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                self.fn(item)
            except BaseException as e:  # noqa: BLE001 - raised in the main thread
                self.error = e
                return

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def _put(self, item: Any) -> None:
        """Wait for room, unless the worker has stopped (then raise its error)."""
        while True:
            try:
                self._q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if not self._t.is_alive():
                    self._raise()
                    raise RuntimeError("the encode thread stopped") from None

    def submit(self, item: Any) -> None:
        if self._t is None:
            self.fn(item)
            return
        self._raise()
        self._put(item)

    def finish(self) -> None:
        """Wait until everything submitted is done; raise the worker's error."""
        if self._t is not None:
            if self._t.is_alive():
                self._put(_END)
            self._t.join()
            self._t = None
        self._raise()

    def cancel(self) -> None:
        """Stop now: what waits is dropped, the item being processed finishes, the thread is joined."""
        self._stop.set()
        if self._t is not None:
            self._t.join()
            self._t = None
        self.error = None
