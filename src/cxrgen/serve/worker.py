"""One model, one worker thread, a bounded number of requests in flight.

Why: torch models are not meant to be called from many threads at once, and a burst of
uploads must not exhaust memory. Requests take a slot when they arrive (503 when none is
free, so at most `capacity` uploads are ever held in memory); decoded images then wait in a
queue, and the worker runs up to `max_batch` of them through the model in one call.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_logger = logging.getLogger(__name__)

BatchFn = Callable[[list[Any]], list[Any]]  # list of inputs -> list of outputs, same order


class Busy(Exception):
    """Every slot is taken: the client should retry later (HTTP 503)."""


@dataclass
class _Job:
    item: Any
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class Result:
    output: Any
    queue_s: float  # waiting for the worker
    batch_s: float  # the model call that included this job
    batch_size: int


class BatchWorker:
    """Runs `fn` on batches of submitted items in a single background thread."""

    def __init__(self, fn: BatchFn, capacity: int = 32, max_batch: int = 8) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError("capacity and max_batch must be at least 1")
        self.fn, self.capacity, self.max_batch = fn, capacity, max_batch
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of `capacity` slots for the whole request, from upload to response."""
        with self._lock:
            if self._in_flight >= self.capacity:
                raise Busy(f"server busy: {self.capacity} requests in progress, retry shortly")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    async def submit(self, item: Any) -> Result:
        """Queue one item and wait (without blocking the event loop) for its output."""
        self._start()
        job = _Job(item)
        self._jobs.put(job)
        return await asyncio.wrap_future(job.future)

    def close(self) -> None:
        """Let the worker finish the queued jobs, then stop."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cxrgen-model", daemon=True)
                self._thread.start()

    def _next_batch(self) -> list[_Job] | None:
        first = self._jobs.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:  # stop after this batch
                self._jobs.put(None)
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            start = time.perf_counter()
            try:
                outputs = self.fn([job.item for job in batch])
                if len(outputs) != len(batch):
                    raise RuntimeError(f"model returned {len(outputs)} outputs for {len(batch)} inputs")
            except Exception as e:  # reported to each waiting request; the worker lives on
                _logger.exception("model call failed for a batch of %d", len(batch))
                for job in batch:
                    job.future.set_exception(e)
                continue
            batch_s = time.perf_counter() - start
            for job, out in zip(batch, outputs):
                job.future.set_result(Result(out, start - job.queued_at, batch_s, len(batch)))
