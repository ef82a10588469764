"""Publishes three orders and handles them in a consumer group: one succeeds at once, one on its
second attempt, one goes to the dead-letter queue; then replays it. Run against `herald serve`:

    python examples/quickstart.py            # HERALD_GRPC=127.0.0.1:7281 by default
"""

import os

from herald_client import Client, Event, Reject, Retry

client = Client(os.environ.get("HERALD_GRPC", "127.0.0.1:7281"))
client.create_topic("py-orders", partitions=2, if_not_exists=True)
for n in (1, 2, 3):
    r = client.publish("py-orders", Event(type="order.created", data=f'{{"n": {n}}}'.encode(),
                                          key=f"customer-{n}", content_type="application/json"))
    print(f"published order {n} at partition {r.partition} offset {r.offset}")


def handle(event):
    n = int(event.data.decode().split(":")[1].strip(" }"))
    if n == 2 and event.attempt == 1:
        raise Retry("payment service busy", delay_ms=50)
    if n == 3 and "dlqreplays" not in event.headers:
        raise Reject("card declined")
    print(f"handled order {n} (attempt {event.attempt})")


consumer = client.consumer("py-billing", ["py-orders"])
consumer.run(handle, max_events=4, idle_timeout=10)
for letter in client.dlq_list("py-billing"):
    print(f"dead letter: {letter.event.key}: {letter.reason}")
print(f"replayed {client.dlq_replay('py-billing')}")
consumer.run(handle, max_events=1, idle_timeout=10)
print("done")
