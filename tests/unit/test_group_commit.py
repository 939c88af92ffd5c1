"""The group writer's life cycle (adapter.http.group_commit): items waiting together share one write,
every waiting request is answered when the app stops (no hang), a failed item fails only its own
request, and after the stop items are written alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from adapter.http.group_commit import GroupCommit


class Writes:
    """A write_many that records its groups; the first group waits until ``release`` is set."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.started.set()
        if not self.groups:
            self.release.wait(10)
        self.groups.append(list(items))
        return [ValueError(f"bad {item}") if item < 0 else item * 10 for item in items]


def test_waiting_items_share_a_write_and_stop_answers_them_all() -> None:
    async def scenario() -> None:
        writes = Writes()
        writer: GroupCommit[int, int] = GroupCommit(writes)
        async with writer.lifespan():
            first = asyncio.create_task(writer.submit(1))
            assert await asyncio.to_thread(writes.started.wait, 10)  # the first group is being written
            rest = [asyncio.create_task(writer.submit(n)) for n in (2, 3, -4, 5)]
            await asyncio.sleep(0.05)  # all four wait behind the first group
            stopping = asyncio.create_task(writer.stop())  # the app stops while requests wait
            await asyncio.sleep(0.05)
            assert not stopping.done()
            writes.release.set()
            await stopping
            assert await first == 10
            results = await asyncio.gather(*rest, return_exceptions=True)
        assert results[:2] == [20, 30] and isinstance(results[2], ValueError) and results[3] == 50
        assert writes.groups == [[1], [2, 3, -4, 5]]  # one write for everything that waited
        assert await writer.submit(6) == 60 and writes.groups[-1] == [6]  # after the stop: alone
        with pytest.raises(ValueError, match="bad -7"):
            await writer.submit(-7)

    asyncio.run(scenario())


def test_stop_without_any_request_returns_at_once() -> None:
    async def scenario() -> None:
        writer: GroupCommit[int, int] = GroupCommit(Writes())
        async with writer.lifespan():
            pass
        await asyncio.wait_for(writer.stop(), 1)

    asyncio.run(scenario())
