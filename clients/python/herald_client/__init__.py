"""A small Python client for Herald's gRPC API (`herald serve`).

    from herald_client import Client, Event, Retry, Reject

    client = Client("127.0.0.1:7281")
    client.create_topic("orders", partitions=4, if_not_exists=True)
    client.publish("orders", Event(type="order.created", data=b'{"total": 42}', key="customer-7"))

    def handle(event):
        if event.attempt < 2 and flaky():
            raise Retry(delay_ms=100)      # nack: delivered again after the delay
        if not valid(event):
            raise Reject("invalid order")  # to the group's dead-letter queue
        # returning acknowledges it

    client.consumer("billing", ["orders"]).run(handle, max_events=100, idle_timeout=5.0)

Errors are `HeraldError` with Herald's stable `code` (`topic_not_found`, `invalid_event`, …) and
`retryable`. The wire API is `proto/herald/v1/herald.proto`; this package is generated from it at
build time.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import grpc

from . import herald_pb2 as pb
from . import herald_pb2_grpc as rpc

__all__ = ["Client", "Consumer", "Event", "Delivery", "DeadLetter", "Receipt", "Retry", "Reject", "HeraldError"]

# Codes a retry may fix (the same list as herald_model::Code::is_retryable).
_RETRYABLE = {"busy", "unavailable", "shutting_down", "request_timeout", "storage_full"}


class HeraldError(Exception):
    """A failure with Herald's stable error code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.code in _RETRYABLE


class Retry(Exception):
    """Raised by a handler: nack the event; it is delivered again after `delay_ms` (or the
    group's backoff), until the group's attempts are used up (then it is dead-lettered)."""

    def __init__(self, reason: str = "retry", delay_ms: Optional[int] = None):
        super().__init__(reason)
        self.reason = reason
        self.delay_ms = delay_ms


class Reject(Exception):
    """Raised by a handler: send the event to the group's dead-letter queue with `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Event:
    """A CloudEvent to publish. `id` defaults to a fresh UUID (publishing the same id from the
    same source again is stored once)."""

    type: str
    data: bytes = b""
    source: str = "/python"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    key: Optional[str] = None
    content_type: Optional[str] = None
    subject: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)

    def _to_proto(self) -> pb.Event:
        e = pb.Event(id=self.id, source=self.source, type=self.type, data=self.data, headers=self.headers)
        e.time_unix_nano = time.time_ns()
        if self.key is not None:
            e.partitionkey = self.key
        if self.content_type is not None:
            e.datacontenttype = self.content_type
        elif self.data:
            e.datacontenttype = "application/octet-stream"
        if self.subject is not None:
            e.subject = self.subject
        return e


@dataclass
class Receipt:
    topic: str
    partition: int
    offset: int
    duplicate: bool


@dataclass
class Delivery:
    """An event as a consumer receives it, with where it came from and its attempt (1 first)."""

    id: str
    type: str
    source: str
    data: bytes
    key: Optional[str]
    content_type: Optional[str]
    headers: Dict[str, str]
    topic: str
    partition: int
    offset: int
    attempt: int


@dataclass
class DeadLetter:
    dlq_offset: int
    event: Delivery
    reason: str


def _error(e: grpc.RpcError) -> HeraldError:
    code = None
    for key, value in (e.trailing_metadata() or ()):
        if key == "herald-code":
            code = value
    if code is None:
        code = "unavailable" if e.code() == grpc.StatusCode.UNAVAILABLE else "remote"
    return HeraldError(code, e.details() or str(e.code()))


def _delivery(stored: pb.StoredEvent, attempt: int) -> Delivery:
    e = stored.event
    return Delivery(
        id=e.id,
        type=e.type,
        source=e.source,
        data=bytes(e.data),
        key=e.partitionkey if e.HasField("partitionkey") else None,
        content_type=e.datacontenttype if e.HasField("datacontenttype") else None,
        headers=dict(e.headers),
        topic=stored.topic,
        partition=stored.partition,
        offset=stored.offset,
        attempt=attempt,
    )


class Client:
    """A connection to `herald serve`'s gRPC address (`host:port`, port 7281 by default).

    `token`: an API token for a server with `--auth token` (default: the `HERALD_TOKEN`
    environment variable), sent as `authorization: Bearer …` on every call. `ca`: a PEM file;
    given, the connection uses TLS and trusts that CA (default: `HERALD_CA`)."""

    def __init__(self, address: str = "127.0.0.1:7281", token: Optional[str] = None, ca: Optional[str] = None):
        self.address = address
        token = token if token is not None else os.environ.get("HERALD_TOKEN") or None
        ca = ca if ca is not None else os.environ.get("HERALD_CA") or None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if ca:
            with open(ca, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(address, credentials)
        else:
            self._channel = grpc.insecure_channel(address)
        self._events = rpc.EventsStub(self._channel)
        self._admin = rpc.AdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, f, request):
        try:
            return f(request, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _error(e) from None

    def create_topic(self, name: str, partitions: int = 1, if_not_exists: bool = False) -> None:
        config = pb.TopicConfig(partitions=partitions)
        self._call(self._admin.CreateTopic, pb.CreateTopicRequest(name=name, config=config, if_not_exists=if_not_exists))

    def delete_topic(self, name: str) -> None:
        self._call(self._admin.DeleteTopic, pb.TopicName(name=name))

    def publish(self, topic: str, event: Event) -> Receipt:
        """Publishes one event; returns once it is stored per the topic's durability."""
        return self.publish_many(topic, [event])[0]

    def publish_many(self, topic: str, events: Iterable[Event]) -> List[Receipt]:
        """Publishes a batch (at most the server's max_batch_events); nothing of a refused batch
        is stored."""
        request = pb.PublishRequest(topic=topic, events=[e._to_proto() for e in events])
        response = self._call(self._events.Publish, request)
        return [Receipt(r.topic, r.partition, r.offset, r.duplicate) for r in response.receipts]

    def dlq_list(self, group: str, max: int = 100) -> List[DeadLetter]:
        response = self._call(self._admin.DlqList, pb.DlqListRequest(group=group, max=max))
        out = []
        for d in response.dead_letters:
            stored = pb.StoredEvent(event=d.event)
            delivery = _delivery(stored, 0)
            out.append(DeadLetter(d.dlq_offset, delivery, d.event.headers.get("dlqreason", "")))
        return out

    def dlq_replay(self, group: str) -> int:
        """Sends the group's dead letters back to that group; returns how many."""
        return self._call(self._admin.DlqReplay, pb.GroupName(group=group)).count

    def whoami(self) -> dict:
        """Who the server takes this client for: principal, anonymous, permissions."""
        me = self._call(self._admin.WhoAmI, pb.Empty())
        return {"principal": me.principal, "anonymous": me.anonymous, "permissions": list(me.permissions)}

    def lag(self, group: str) -> int:
        info = self._call(self._admin.DescribeGroup, pb.GroupName(group=group))
        return sum(p.lag for p in info.partitions)

    def consumer(self, group: str, topics: List[str], max_in_flight: int = 64) -> "Consumer":
        return Consumer(self, group, topics, max_in_flight)


_STOP = object()


class Consumer:
    """A member of a consumer group: `run` hands each event to a handler and settles it by the
    handler's outcome (return: ack; `Retry`: nack; `Reject`: dead letter; any other exception:
    nack with the group's backoff)."""

    def __init__(self, client: Client, group: str, topics: List[str], max_in_flight: int = 64):
        self.client = client
        self.group = group
        self.topics = topics
        self.max_in_flight = max_in_flight
        self.errors: List[HeraldError] = []

    def run(self, handler: Callable[[Delivery], None], max_events: Optional[int] = None,
            idle_timeout: Optional[float] = None) -> int:
        """Runs until `max_events` were handled, or nothing arrived for `idle_timeout` seconds;
        returns how many were handled (retries count each time). Leaves the group on return."""
        requests: "queue.Queue" = queue.Queue()
        settings = pb.GroupSettings(topics=self.topics)
        requests.put(pb.SubscribeRequest(join=pb.Join(group=self.group, settings=settings,
                                                      max_in_flight=self.max_in_flight)))

        def outgoing():
            while True:
                item = requests.get()
                if item is _STOP:
                    return
                yield item

        responses = self.client._events.Subscribe(outgoing(), metadata=self.client._metadata)
        incoming: "queue.Queue" = queue.Queue()

        def read():
            try:
                for m in responses:
                    incoming.put(m)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    incoming.put(_error(e))
            incoming.put(_STOP)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        handled = 0
        seq = 0
        try:
            while max_events is None or handled < max_events:
                try:
                    m = incoming.get(timeout=idle_timeout)
                except queue.Empty:
                    break
                if m is _STOP:
                    break
                if isinstance(m, HeraldError):
                    raise m
                kind = m.WhichOneof("msg")
                if kind == "settled":
                    if m.settled.error_code:
                        self.errors.append(HeraldError(m.settled.error_code, m.settled.error_message))
                    continue
                if kind != "deliveries":
                    continue
                for d in m.deliveries.deliveries:
                    delivery = _delivery(d.stored, d.id.attempt)
                    settle = pb.Settle(id=d.id)
                    try:
                        handler(delivery)
                        settle.kind = pb.Settle.KIND_ACK
                    except Retry as r:
                        settle.kind = pb.Settle.KIND_NACK
                        settle.reason = r.reason
                        if r.delay_ms is not None:
                            settle.delay_ms = r.delay_ms
                    except Reject as r:
                        settle.kind = pb.Settle.KIND_REJECT
                        settle.reason = r.reason
                    except Exception as e:  # noqa: BLE001 - a handler's failure is a retry
                        settle.kind = pb.Settle.KIND_NACK
                        settle.reason = f"{type(e).__name__}: {e}"
                    seq += 1
                    settle.seq = seq
                    requests.put(pb.SubscribeRequest(settle=settle))
                    requests.put(pb.SubscribeRequest(credit=pb.Credit(n=1)))
                    handled += 1
        finally:
            # Half-close: the server ends the stream once it has answered what was sent, and the
            # member leaves the group.
            requests.put(_STOP)
            deadline = time.monotonic() + 5
            while reader.is_alive() and time.monotonic() < deadline:
                try:
                    m = incoming.get(timeout=0.1)
                except queue.Empty:
                    continue
                if m is _STOP:
                    break
                if not isinstance(m, HeraldError) and m.WhichOneof("msg") == "settled" and m.settled.error_code:
                    self.errors.append(HeraldError(m.settled.error_code, m.settled.error_message))
            responses.cancel()
        return handled
