"""The micro-batcher: batches form from items that wait together, results keep their order."""

from __future__ import annotations

import threading

import pytest

from guard.batching import BatcherClosed, MicroBatcher


class GatedDouble:
    """Doubles numbers; the first call blocks until released, so later items pile up."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.entered.set()
        assert self.release.wait(10)
        return [2 * i for i in items]


def test_items_queued_while_the_model_is_busy_run_as_one_batch_in_order() -> None:
    fn = GatedDouble()
    batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=0)
    try:
        first = batcher.submit(1)
        assert fn.entered.wait(10)
        later = batcher.submit_many(list(range(10, 20)))
        fn.release.set()
        assert first.result(10) == 2
        assert [f.result(10) for f in later] == [2 * i for i in range(10, 20)]
        assert fn.calls == [[1], list(range(10, 18)), list(range(18, 20))]
        stats = batcher.stats
        assert (stats.batches, stats.items, stats.max_batch) == (3, 11, 8)
        assert stats.sizes == {1: 1, 8: 1, 2: 1}
    finally:
        batcher.close()


def test_a_failing_batch_fails_each_of_its_items_and_the_batcher_goes_on() -> None:
    def fn(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("zero")
        return items

    batcher = MicroBatcher(fn, max_batch_size=4, max_wait_ms=0)
    try:
        with pytest.raises(ValueError, match="zero"):
            batcher.submit(0).result(10)
        assert batcher.submit(3).result(10) == 3
        assert batcher.stats.errors == 1
    finally:
        batcher.close()


def test_a_wrong_number_of_results_is_an_error_not_a_silent_mismatch() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items[:-1], max_wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="0 results for 1 items"):
            batcher.submit(1).result(10)
    finally:
        batcher.close()


def test_cancelled_items_are_skipped() -> None:
    fn = GatedDouble()
    batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=0)
    try:
        batcher.submit(1)
        assert fn.entered.wait(10)
        dropped, kept = batcher.submit_many([5, 6])
        assert dropped.cancel()
        fn.release.set()
        assert kept.result(10) == 12
        assert fn.calls[1] == [6]
    finally:
        batcher.close()


def test_waiting_for_more_items_fills_a_batch_from_separate_submits() -> None:
    seen: list[list[int]] = []
    # A long wait: the batch closes because it is full, not because the wait ran out.
    batcher = MicroBatcher(lambda items: seen.append(list(items)) or items, max_batch_size=3,
                           max_wait_ms=60_000)
    try:
        futures = [batcher.submit(i) for i in range(3)]
        assert [f.result(10) for f in futures] == [0, 1, 2]
        assert seen == [[0, 1, 2]]
    finally:
        batcher.close()


def test_submit_after_close_raises_and_queued_items_fail() -> None:
    fn = GatedDouble()
    batcher = MicroBatcher(fn, max_wait_ms=0)
    batcher.submit(1)
    assert fn.entered.wait(10)
    queued = batcher.submit(2)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    with pytest.raises(BatcherClosed):
        queued.result(10)
    fn.release.set()
    closer.join(10)
    with pytest.raises(BatcherClosed):
        batcher.submit(3)


def test_a_batch_failed_by_one_bad_item_reruns_the_others_alone() -> None:
    fn = GatedDouble()

    def picky(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("negative")
        return fn(items)

    batcher = MicroBatcher(picky, max_batch_size=8, max_wait_ms=0,
                           retry_alone=lambda error: isinstance(error, ValueError))
    try:
        batcher.submit(1)
        assert fn.entered.wait(10)
        good, bad, other = batcher.submit_many([2, -1, 3])
        fn.release.set()
        assert good.result(10) == 4 and other.result(10) == 6
        with pytest.raises(ValueError, match="negative"):
            bad.result(10)
    finally:
        batcher.close()


def test_an_exception_returned_for_one_item_fails_only_that_item() -> None:
    batcher = MicroBatcher(lambda items: [ValueError(i) if i < 0 else i for i in items], max_wait_ms=0)
    try:
        ok, bad = batcher.submit_many([1, -1])
        assert ok.result(10) == 1
        with pytest.raises(ValueError):
            bad.result(10)
    finally:
        batcher.close()


def test_inline_runs_on_the_calling_thread_when_idle_and_queues_when_busy() -> None:
    fn = GatedDouble()
    threads: list[str] = []

    def record(items: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        return fn(items) if items[0] == 1 else [2 * i for i in items]

    batcher = MicroBatcher(record, max_batch_size=8, max_wait_ms=0, name="b")
    try:
        [done] = batcher.submit_many([5], inline=True)
        assert done.done() and done.result() == 10 and threads == [threading.current_thread().name]
        busy = threading.Thread(target=lambda: batcher.submit_many([1], inline=True), name="busy")
        busy.start()
        assert fn.entered.wait(10)
        [queued] = batcher.submit_many([7], inline=True)  # a batch is running: this one waits its turn
        assert not queued.done()
        fn.release.set()
        assert queued.result(10) == 14 and threads[-1] == "b-0"
        busy.join(10)
    finally:
        batcher.close()
