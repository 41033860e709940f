"""Group commit: store calls that queue up while a transaction is committing share the next one.

Every metadata write ends in a commit, and with ``synchronous=FULL`` every commit
is an fsync of the WAL (about a millisecond on a good disk, more on a busy one).
One writer thread doing one commit per call caps small PUTs at roughly one
thousand a second whatever the concurrency. Instead the writer thread takes
every call waiting in its queue, runs each inside its own SAVEPOINT of one
transaction (so a call that fails, e.g. a failed If-None-Match, rolls back alone
and raises to its own caller), commits once, and only then answers all of them.
Nothing is acknowledged before the fsync that makes it durable, and calls still
run one after another in arrival order, so conditional writes keep their meaning.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

log = logging.getLogger("apollo.meta")
BATCH_CALLS_MAX = 128

_Call = tuple[Future, Callable[..., Any], tuple, dict]


class GroupCommitExecutor(Executor):
    """A single-thread executor for one store whose queued calls commit together (``store.batch()``)."""

    def __init__(self, store, name: str = "meta-writer") -> None:
        self._store = store
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0  # commits done, and calls they carried: the grouping ratio, for tests and metrics
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < BATCH_CALLS_MAX:
                try:
                    call = self._queue.get_nowait()
                except queue.Empty:
                    break
                if call is None:
                    stop = True
                    break
                batch.append(call)
            self._run_batch([call for call in batch if call[0].set_running_or_notify_cancel()])
            if stop:
                return

    def _run_batch(self, batch: list[_Call]) -> None:
        if not batch:
            return
        self.batches += 1
        self.calls += len(batch)
        if len(batch) == 1:  # nothing to share: the call's own transaction
            future, fn, args, kwargs = batch[0]
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
            return
        outcomes: list[tuple[Future, bool, Any]] = []
        try:
            with self._store.batch():
                for future, fn, args, kwargs in batch:
                    try:
                        outcomes.append((future, True, fn(*args, **kwargs)))
                    except Exception as exc:  # the call's savepoint is rolled back; the batch goes on
                        outcomes.append((future, False, exc))
        except BaseException as exc:  # the commit itself failed: nothing in the batch is durable
            log.error("metadata group commit of %d calls failed: %s", len(batch), exc)
            for future, *_ in batch:
                future.set_exception(exc)
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
