"""The Python client against a real `herald serve` (HERALD_BIN, started per test class on free
ports with its own data directory)."""

import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

from herald_client import Client, Event, HeraldError, Reject, Retry

HERE = os.path.dirname(os.path.abspath(__file__))


class Server:
    def __init__(self, *extra, data_dir=None):
        self.dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [os.environ["HERALD_BIN"], "serve", "--data-dir", data_dir or self.dir.name, "--http", "127.0.0.1:0",
             "--grpc", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            # The server reads HERALD_* variables as its settings: give it none of the test's.
            env={**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}, "HERALD_LOG": "warn"})
        line = self.proc.stdout.readline()
        m = re.search(r"grpc://(\S+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"herald serve printed {line!r}")
        self.grpc = m.group(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.dir.cleanup()


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.client = Client(cls.server.grpc)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def wait_lag_zero(self, group):
        deadline = time.monotonic() + 15
        while self.client.lag(group) != 0:
            self.assertLess(time.monotonic(), deadline, f"group {group} keeps a lag")
            time.sleep(0.05)

    def test_publish_and_consume_keep_every_attribute_and_order_per_key(self):
        self.client.create_topic("roundtrip", partitions=3)
        events = [Event(type="order.created", source="/shop", data=f"{i}".encode(), key=f"k{i % 2}",
                        content_type="text/plain", headers={"tenant": "acme"}) for i in range(10)]
        receipts = self.client.publish_many("roundtrip", events)
        self.assertEqual(len(receipts), 10)
        self.assertFalse(any(r.duplicate for r in receipts))
        # The same event again is stored once.
        self.assertTrue(self.client.publish("roundtrip", events[0]).duplicate)
        seen = []
        n = self.client.consumer("rt", ["roundtrip"]).run(seen.append, max_events=10, idle_timeout=10)
        self.assertEqual(n, 10)
        by_id = {e.id: e for e in events}
        for d in seen:
            sent = by_id[d.id]
            self.assertEqual((d.type, d.source, d.data, d.key, d.content_type), (sent.type, sent.source, sent.data,
                                                                               sent.key, sent.content_type))
            self.assertEqual(d.headers.get("tenant"), "acme")
            self.assertEqual(d.attempt, 1)
        for key in ("k0", "k1"):
            self.assertEqual([d.data for d in seen if d.key == key], [e.data for e in events if e.key == key])
        self.wait_lag_zero("rt")

    def test_retry_then_ack_and_reject_to_the_dlq_then_replay(self):
        self.client.create_topic("flaky", partitions=1)
        self.client.publish("flaky", Event(type="t", data=b"retry", key="a"))
        self.client.publish("flaky", Event(type="t", data=b"reject", key="b"))
        attempts = []

        def handle(d):
            attempts.append((d.data, d.attempt))
            if d.data == b"retry" and d.attempt == 1:
                raise Retry("not yet", delay_ms=20)
            if d.data == b"reject" and "dlqreplays" not in d.headers:
                raise Reject("no such customer")

        consumer = self.client.consumer("flaky-g", ["flaky"])
        self.assertEqual(consumer.run(handle, max_events=3, idle_timeout=10), 3)
        self.assertIn((b"retry", 2), attempts)
        letters = self.client.dlq_list("flaky-g")
        self.assertEqual([(l.event.data, l.reason) for l in letters], [(b"reject", "no such customer")])
        self.assertEqual(self.client.dlq_replay("flaky-g"), 1)
        self.assertEqual(consumer.run(handle, max_events=1, idle_timeout=10), 1)
        self.assertEqual(attempts[-1][0], b"reject")
        self.assertEqual(self.client.dlq_list("flaky-g"), [])
        self.assertEqual(consumer.errors, [])

    def test_errors_carry_herald_codes(self):
        with self.assertRaises(HeraldError) as e:
            self.client.publish("no-such-topic", Event(type="t"))
        self.assertEqual(e.exception.code, "topic_not_found")
        self.assertFalse(e.exception.retryable)
        with self.assertRaises(HeraldError) as e:
            self.client.publish("bad name!", Event(type="t"))
        self.assertEqual(e.exception.code, "invalid_topic_name")
        self.client.create_topic("strict", partitions=2)
        with self.assertRaises(HeraldError) as e:
            self.client.create_topic("strict", partitions=3, if_not_exists=True)
        self.assertEqual(e.exception.code, "invalid_config")
        with self.assertRaises(HeraldError) as e:
            self.client.publish("strict", Event(type=""))
        self.assertEqual(e.exception.code, "invalid_event")

    def test_the_example_runs_as_written(self):
        out = subprocess.run([sys.executable, os.path.join(HERE, "..", "examples", "quickstart.py")],
                             env={**os.environ, "HERALD_GRPC": self.server.grpc}, capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        for line in ("handled order 1 (attempt 1)", "handled order 2 (attempt 2)",
                     "dead letter: customer-3: card declined", "replayed 1", "handled order 3", "done"):
            self.assertIn(line, out.stdout)


if __name__ == "__main__":
    unittest.main()


class TokenTest(unittest.TestCase):
    """A server with --auth token: the client sends its token; without one it is refused."""

    def test_a_token_is_sent_and_its_permissions_apply(self):
        with tempfile.TemporaryDirectory() as d:
            def token(name, *allow):
                args = [os.environ["HERALD_BIN"], "token", "create", "--data-dir", d, "--name", name]
                for a in allow:
                    args += ["--allow", a]
                env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
                return subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout.strip()
            admin, producer = token("admin", "*:*"), token("py-producer", "publish:topic/orders")
            # The tokens live in the server's data directory.
            server = Server("--auth", "token", data_dir=d)
            try:
                with Client(server.grpc) as anonymous:
                    with self.assertRaises(HeraldError) as e:
                        anonymous.create_topic("orders")
                    self.assertEqual(e.exception.code, "unauthenticated")
                with Client(server.grpc, token=admin) as a:
                    a.create_topic("orders", partitions=1)
                with Client(server.grpc, token=producer) as p:
                    self.assertEqual(p.whoami()["principal"], "py-producer")
                    p.publish("orders", Event(type="t", data=b"x"))
                    with self.assertRaises(HeraldError) as e:
                        p.delete_topic("orders")
                    self.assertEqual(e.exception.code, "permission_denied")
            finally:
                server.stop()
