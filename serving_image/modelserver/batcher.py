"""Adaptive micro-batching: requests that arrive together share one predict call.

Why: a scikit-learn predict costs about the same for 1 row as for 32, so under load the server
does far more work per CPU second by scoring many requests at once.

How the window adapts, with no fixed timer that would slow a lone client:
- predict calls run on ``slots`` inference threads (one by default); while every slot is busy,
  new requests queue up, and the next free slot takes everything queued (up to
  ``max_batch_size`` rows). Under load, batches therefore grow to match the arrival rate.
- when a slot is free and recent batches held several requests, the dispatcher yields to the
  event loop as long as the queue keeps growing (requests already read from sockets get parsed
  and join), and waits a little longer only while requests that have started but not yet reached
  the batcher exist. Both are bounded by ``max_wait``. A single client never waits: its request
  is alone, recent batches were single requests, nothing else is on the way, and it is dispatched
  at once.

Calls run on the inference thread, except for runtimes whose calls provably take microseconds
(the verified linear fast path), which are scored inline while they stay under a time budget:
the thread hand-off alone costs more than they do (see ``_call``).

If a batch fails, each request in it is retried alone, so one bad request (say, a row a custom
model rejects) fails only itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .errors import RequestError
from .protocol import ParsedRequest

Predict = Callable[[np.ndarray, frozenset[str]], dict[str, np.ndarray]]
OnBatch = Callable[[np.ndarray, float], None]
log = logging.getLogger("modelserver.batcher")


@dataclass
class _Item:
    x: np.ndarray
    outputs: frozenset[str]
    future: asyncio.Future[dict[str, np.ndarray]] = field(repr=False)


class Batcher:
    def __init__(
        self,
        predict: Predict,
        executor: Executor,
        *,
        slots: int = 1,
        max_batch_size: int = 64,
        max_wait: float = 0.002,
        on_batch: OnBatch | None = None,
        inline_rows: int = 0,
        inline_budget: float = 0.0003,
    ) -> None:
        self._predict = predict
        self._executor = executor
        self._slots = asyncio.Semaphore(slots)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._on_batch = on_batch
        self.inline_rows = inline_rows
        self.inline_budget = inline_budget
        self._inline_calls = 0  # inline calls in the current window of 32
        self._inline_slow = 0  # ... of which over budget
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._recent_batch = 1.0
        self._arrived = asyncio.Event()
        self.incoming = 0  # requests that started and will call submit soon (set by the app)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def submit(self, x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        """Score ``x`` in the next batch; returns this request's slice of each output."""
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(x, outputs, future))
        self._queued_rows += len(x)
        self._arrived.set()
        return await future

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather_more()
            items = self._take()
            task = asyncio.get_running_loop().create_task(self._run(items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather_more(self) -> None:
        """Let requests that are already on their way join this batch (bounded by max_wait)."""
        if self.max_batch_size <= 1 or self.max_wait <= 0:
            return
        if len(self._queue) == 1 and self.incoming == 0 and self._recent_batch < 1.5:
            return  # light load: a lone request goes at once, without even a loop iteration
        deadline = time.monotonic() + self.max_wait
        while self._queued_rows < self.max_batch_size and time.monotonic() < deadline:
            before = len(self._queue)
            if self.incoming > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
                except TimeoutError:
                    return
            else:
                await asyncio.sleep(0)
                if len(self._queue) == before:
                    return

    def _take(self) -> list[_Item]:
        items = [self._queue.popleft()]
        rows = len(items[0].x)
        while self._queue and rows + len(self._queue[0].x) <= self.max_batch_size:
            item = self._queue.popleft()
            items.append(item)
            rows += len(item.x)
        self._queued_rows -= rows
        # a short memory of how many requests a batch gathers: ~1 means light load
        self._recent_batch = 0.8 * self._recent_batch + 0.2 * len(items)
        return items

    async def _run(self, items: list[_Item]) -> None:
        try:
            live = [it for it in items if not it.future.done()]  # skip clients that left
            if not live:
                return
            try:
                results = await self._call(live)
            except Exception:
                if len(live) == 1:
                    raise
                for item in live:  # isolate the request that broke the batch
                    await self._run_alone(item)
                return
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        except Exception as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
        finally:
            self._slots.release()

    async def _call(self, items: list[_Item]) -> list[dict[str, np.ndarray]]:
        """Score on the inference thread, or inline when the call is known to take microseconds.

        Handing a call to a thread and back costs ~100 µs of wake-ups and GIL transfers, more
        than a verified linear fast path takes for 64 rows. Runtimes that declare a bounded cost
        (``inline_rows``) are scored on the loop while their calls' CPU time stays under
        ``inline_budget``; one that turns out slower is moved to the thread for good.
        """
        rows = sum(len(it.x) for it in items)
        if rows > self.inline_rows:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._score, items
            )
        start = time.thread_time()  # CPU time: being preempted is not the model's cost
        try:
            return self._score(items)
        finally:
            self._inline_check(time.thread_time() - start)

    def _inline_check(self, cost: float) -> None:
        """Stop inlining after one call over 10x the budget, or most of 32 calls over it."""
        self._inline_calls += 1
        self._inline_slow += cost > self.inline_budget
        if cost > 10 * self.inline_budget or self._inline_slow > 16:
            log.warning(
                "a predict call took %.0f µs of CPU (inline budget %.0f µs): scoring on the "
                "inference thread from now on", cost * 1e6, self.inline_budget * 1e6,
            )  # fmt: skip
            self.inline_rows = 0
        if self._inline_calls >= 32:
            self._inline_calls = self._inline_slow = 0

    async def _run_alone(self, item: _Item) -> None:
        try:
            (result,) = await self._call([item])
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
            return
        if not item.future.done():
            item.future.set_result(result)

    def _score(self, items: list[_Item]) -> list[dict[str, np.ndarray]]:
        """One predict call for all rows, then split by request (normally on the thread)."""
        x = items[0].x if len(items) == 1 else np.concatenate([it.x for it in items])
        wanted = (
            items[0].outputs
            if len(items) == 1
            else frozenset().union(*(it.outputs for it in items))
        )
        start = time.perf_counter()
        out = self._predict(x, wanted)
        elapsed = time.perf_counter() - start
        for name, arr in out.items():
            if len(arr) != len(x):
                raise ValueError(f"model returned {len(arr)} rows of {name!r} for {len(x)} inputs")
        if self._on_batch is not None:
            self._on_batch(x, elapsed)
        results = []
        offset = 0
        for it in items:
            end = offset + len(it.x)
            results.append({k: v[offset:end] for k, v in out.items() if k in it.outputs})
            offset = end
        return results


async def score(batcher: Batcher, request: ParsedRequest) -> dict[str, np.ndarray]:
    """Score a parsed request in the next batch, the same way for REST and gRPC: an exception
    from the model becomes a 500 naming it (INTERNAL over gRPC), and the server keeps serving."""
    try:
        return await batcher.submit(request.x, request.outputs)
    except Exception as exc:
        log.warning("inference failed: %s: %s", type(exc).__name__, exc)
        raise RequestError(500, f"inference failed: {type(exc).__name__}: {exc}") from exc
