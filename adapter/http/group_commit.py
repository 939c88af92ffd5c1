"""Group commit: concurrent requests share one transaction, and each is answered after that commit.

A webhook receiver that commits once per request spends most of its time committing (and, on
SQLite, waiting for the one writer). Here each request hands its item to the process's writer and
waits; the writer takes everything waiting (at most ``max_batch``), writes it with one call of
``write_many`` in a worker thread (one thread hop per group, not per request) and then answers every
request of the group. Requests that arrive while a group is being written form the next group, so
a quiet service still answers at once and a busy one commits less often.

``write_many`` answers per item — a result, or the exception that item's write raised — so one bad
item fails only its own request (the caller retries the group's items one by one when the shared
write fails). The writer runs on the event loop that first submits; :meth:`GroupCommit.lifespan`
stops it with the app, after answering every request still waiting. After that, and from any other
event loop, an item is written alone, as it would be without group commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
Waiting = tuple[Any, "asyncio.Future[Any]"]


class GroupCommit(Generic[Item, Result]):
    """One writer per process (per app): see the module docstring."""

    def __init__(self, write_many: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
                 max_batch: int = 256) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._waiting: list[Waiting] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def submit(self, item: Item) -> Result:
        """Returns ``item``'s result once its group is committed, or raises its write's exception."""
        loop = asyncio.get_running_loop()
        if not self._serves(loop):
            [outcome] = await asyncio.to_thread(self._write_many, [item])
            return _unwrap(outcome)
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """Starts the writer with the app and stops it after the app stopped taking requests."""
        self._stopping = False
        self._serves(asyncio.get_running_loop())
        try:
            yield
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Answers every request still waiting, then ends the writer; later items are written alone."""
        self._stopping = True
        task = self._task
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            return
        assert self._wake is not None
        self._wake.set()
        await task

    def _serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this loop's requests go through the writer; starts it on first use."""
        if self._stopping:
            return False
        if self._task is not None and not self._task.done():
            return self._loop is loop
        self._loop, self._wake = loop, asyncio.Event()
        self._task = loop.create_task(self._run(), name="webhook-group-commit")
        return True

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                group, self._waiting = self._waiting[:self._max_batch], self._waiting[self._max_batch:]
                try:
                    outcomes: Sequence[Any] = await asyncio.to_thread(self._write_many, [item for item, _ in group])
                except Exception as error:  # write_many answers per item; this is a bug in it, not a bad item
                    outcomes = [error] * len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # the client went away; its item was written all the same
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            if self._stopping:
                return


def _unwrap(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
