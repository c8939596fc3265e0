"""kombu's Redis transport on the broker's clock.

kombu keeps a delivered, unacked message in a sorted set scored with the consumer's own clock,
and every consumer puts back the messages older than the visibility timeout by its own clock.
One host whose clock runs ahead then takes back messages that other hosts are still working on
(tests/faults/test_hosts.py: a sovits host 90 s ahead redid segments and resent webhooks).
Here both the score and the ceiling come from Redis's TIME, the one clock every consumer shares.
Selected by `celery_app` for redis:// brokers; the two methods it changes are kombu 5.x's.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps


def broker_time(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


class BrokerClockQoS(kombu_redis.QoS):
    """Unacked bookkeeping scored and expired by the broker's clock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._local_lead_s = 0.0

    def append(self, message: Any, delivery_tag: Any) -> None:
        delivery = message.delivery_info
        with self.channel.conn_or_acquire() as client:
            now = broker_time(client)
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: now}).hset(
                self.unacked_key, delivery_tag, dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
            ).execute()
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        with self.channel.conn_or_acquire() as client:
            self._local_lead_s = time.time() - broker_time(client)
        super().restore_visible(start, num, interval)  # type: ignore[no-untyped-call]

    @property
    def visibility_timeout(self) -> float:
        # kombu's ceiling is local time() minus this; adding the local clock's lead over the
        # broker's makes it the broker's time minus the configured timeout.
        return float(self.channel.visibility_timeout) + self._local_lead_s


class BrokerClockChannel(kombu_redis.Channel):
    QoS = BrokerClockQoS


class Transport(kombu_redis.Transport):
    Channel = BrokerClockChannel
