"""The workers' Redis transport: kombu's, with the unacked bookkeeping taken off the event loop.

kombu's Redis transport emulates acknowledgements with an ``unacked`` hash (and an index of when
each entry was added): a received task is recorded there (``QoS.append``), an acknowledged one
removed (``QoS.ack``), and any worker's sweep re-queues entries older than the visibility timeout.
kombu does both writes as blocking round trips on the worker's event-loop thread, which also reads
every task: per task two round trips during which no task is read, one of them between receiving a
task and handing it to a pool thread. It also builds a new ``redis.Redis`` object for each (more
CPU than the round trip: redis-py fills a table of ~200 response callbacks per object).

Here both writes go to one recorder thread per channel, which sends whatever has queued up as one
transaction on a client kept for the channel: the event loop hands a task to the pool at once, and
under load many records and acknowledgements share a round trip. What stays true:

* the records of one task are written in order (a task's entry is added before it is removed),
  because one thread writes them all, in the order the event loop made them;
* an acknowledgement is still sent only after the task's result was stored (Celery acks late);
* before anything *reads* the hash for this worker (rejecting with requeue, restoring at
  shutdown), the recorder is flushed.

A task acknowledged before its record was written (a fast task: the record waits ~2 ms) is
simply taken back from the queue: its result is stored, so there is nothing to redeliver, and
neither the record nor its removal reaches Redis.

What changes: a task's entry appears a moment (~2 ms and a round trip) later than before. A worker killed
in that moment takes the task with it, as one killed between BRPOP and kombu's own record always
could; the waiting client publishes such a task again (``guard.executor.redelivery``). If Redis
cannot be written, the records are dropped with a warning: a task whose record was lost is
recovered the same way, and an acknowledgement lost means one redundant run after the visibility
timeout.

Selected with Celery's ``broker_transport`` for ``redis://`` brokers (``workers.app``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps
from redis.exceptions import RedisError

log = logging.getLogger("guard.worker")

#: How long ``flush`` waits for the recorder before going on without it.
FLUSH_TIMEOUT_S = 5.0
#: How long an acknowledgement may wait to share a round trip (the broker only reads the hash
#: after a visibility timeout of seconds, so this delay changes nothing but the cost).
LAZY_S = 0.05
#: How soon a task's record is written (with whatever else queued up meanwhile).
URGENT_DELAY_S = 0.002

Op = Callable[[Any], None]


def _stop(pipe: Any) -> None:
    """Queued last by ``Recorder.close``: the thread ends after the batch it is in."""


_STOP: Op = _stop


class Recorder:
    """Writes queued operations to Redis from its own thread, in order, batched per round trip.

    An urgent operation (a task's record) is written within ``urgent_delay_s``; others
    (acknowledgements) wait up to ``lazy_s`` for the next urgent one or the next tick, so that they
    neither wake anything while a result is on its way to its caller nor cost a round trip of
    their own."""

    def __init__(self, client: Callable[[], Any], lazy_s: float = LAZY_S,
                 urgent_delay_s: float = URGENT_DELAY_S) -> None:
        self._client = client
        self._lazy_s = lazy_s
        self._urgent_delay_s = urgent_delay_s
        self._ops: list[Op | threading.Event] = []
        #: Ops queued with a key and not yet taken for writing.
        self._unwritten: dict[Any, Op] = {}
        self._urgent = False
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def add(self, op: Op, *, urgent: bool = True, key: Any = None) -> None:
        """Queue ``op``; a ``key`` names the record it writes, which ``cancel`` can take back."""
        with self._wake:
            self._ops.append(op)
            if key is not None:
                self._unwritten[key] = op
            self._start()
            if urgent:
                self._urgent = True
                self._wake.notify()

    def kick(self) -> None:
        """Write what is queued within ``urgent_delay_s`` (as if an urgent op had been added)."""
        with self._wake:
            if self._ops and not self._urgent:
                self._urgent = True
                self._wake.notify()

    def cancel(self, key: Any) -> bool:
        """Take back the op queued under ``key`` if it is not written yet (then True)."""
        with self._wake:
            op = self._unwritten.pop(key, None)
            if op is None:
                return False
            self._ops.remove(op)
            return True

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Return once everything added so far is written (or ``timeout`` passed)."""
        done = threading.Event()
        with self._wake:
            if not self._ops and self._thread is None:
                return
            self._ops.append(done)
            self._urgent = True
            self._start()
            self._wake.notify()
        if not done.wait(timeout):
            log.warning("the unacked records were not written within %.0f s", timeout)

    def close(self) -> None:
        """Write what is queued, then end the thread (a later ``add`` starts a new one)."""
        self.flush()
        with self._wake:
            if self._thread is not None:
                self._ops.append(_STOP)
                self._urgent = True
                self._wake.notify()
                self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="guard-unacked", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                urgent = self._wake.wait_for(lambda: self._urgent, timeout=self._lazy_s)
                if not self._ops:
                    continue
            if urgent:
                # A moment for more to queue up, and for the pool thread that was just handed the
                # task to run first: writing at once competed with it for the GIL on the path
                # from a task to its result (~0.3 ms per task with a no-op model).
                time.sleep(self._urgent_delay_s)
            with self._wake:
                batch, self._ops, self._urgent = self._ops, [], False
                self._unwritten.clear()
            stop = _STOP in batch
            batch = [item for item in batch if item is not _STOP]
            ops = [op for op in batch if not isinstance(op, threading.Event)]
            if ops:
                self._write(ops)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if stop:
                return

    def _write(self, ops: list[Op]) -> None:
        for attempt in (1, 2):  # a second try on a fresh connection after a stale pooled one
            try:
                with self._client().pipeline() as pipe:
                    for op in ops:
                        op(pipe)
                    pipe.execute()
                return
            except (RedisError, OSError) as error:
                if attempt == 2:
                    log.warning("dropped %d unacked records (Redis: %s)", len(ops), error)


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS with the hash writes handed to the channel's ``Recorder``."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        delivery = message.delivery_info
        raw, exchange, routing_key = message._raw, delivery["exchange"], delivery["routing_key"]
        added_at = time.time()
        index, unacked = self.unacked_index_key, self.unacked_key

        def record(pipe: Any) -> None:  # serialised here, on the recorder's thread
            pipe.zadd(index, {delivery_tag: added_at})
            pipe.hset(unacked, delivery_tag, dumps([raw, exchange, routing_key]))

        # Not urgent: no thread wake-up on the way from a task to its run. The guard tasks' strategy
        # kicks the recorder when it hands a task to the pool (``workers.strategy``); a task it runs
        # at once is acknowledged before the record would be written, which takes the record back.
        # Anything else is recorded on the recorder's next tick (``LAZY_S``).
        self.channel.recorder.add(record, urgent=False, key=delivery_tag)
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        if self.channel.recorder.cancel(delivery_tag):
            # Answered before its record was written: neither the record nor its removal is needed.
            virtual.QoS.ack(self, delivery_tag)
            return
        index, unacked = self.unacked_index_key, self.unacked_key

        def remove(pipe: Any) -> None:
            pipe.zrem(index, delivery_tag)
            pipe.hdel(unacked, delivery_tag)

        self.channel.recorder.add(remove, urgent=False)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        self.channel.recorder.flush()
        super().reject(delivery_tag, requeue=requeue)

    def restore_unacked(self, client: Any = None) -> None:
        self.channel.recorder.flush()
        super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: Any = None
    _recorder: Recorder | None = None

    @property
    def recorder(self) -> Recorder:
        if self._recorder is None:
            self._recorder = Recorder(self._create_client)
        return self._recorder

    def close(self) -> None:
        super().close()  # restores this channel's unacknowledged tasks first (flushing the recorder)
        if self._recorder is not None:
            self._recorder.close()

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One synchronous client per connection pool (kombu builds one per use)."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


#: Celery's ``broker_transport`` value naming this transport.
TRANSPORT = f"{__name__}:Transport"
