"""Black-box test: what operators watch. matrix-nio users log in, talk and sync; the
metrics listener's /metrics is parsed with Prometheus's own Python parser and shows
those requests by endpoint and status, their latency histograms, held syncs, storage
batch latency and RocksDB figures; /health and /ready answer on both listeners; a
request's id comes back in X-Request-Id and marks its log lines."""

import asyncio
import json
import time
import unittest
import urllib.request

from harness import Server, free_port
from nio import AsyncClient, RegisterResponse, RoomCreateResponse, RoomSendResponse
from prometheus_client.openmetrics.parser import text_string_to_metric_families


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


class OperationsTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.metrics_port = free_port()
        self.server = Server(
            f"""
[global.threepids.sms]
driver = "log"

[global.metrics]
enabled = true
port = {self.metrics_port}
"""
        )
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.clients = []

    async def asyncTearDown(self):
        for client in self.clients:
            await client.close()

    def tearDown(self):
        self.server.stop()

    def scrape(self):
        status, headers, text = get(f"{self.metrics_url}/metrics")
        self.assertEqual(status, 200, text)
        self.assertTrue(headers["Content-Type"].startswith("application/openmetrics-text"), headers)
        return {family.name: family for family in text_string_to_metric_families(text)}

    @staticmethod
    def samples(family, **labels):
        return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]

    async def test_metrics_probes_and_request_ids(self):
        alice = AsyncClient(self.server.url, "alice")
        bob = AsyncClient(self.server.url, "bob")
        self.clients += [alice, bob]
        self.assertIsInstance(await alice.register("alice", "pw"), RegisterResponse)
        self.assertIsInstance(await bob.register("bob", "pw"), RegisterResponse)
        created = await alice.room_create(invite=["@bob:localhost"])
        self.assertIsInstance(created, RoomCreateResponse)
        await bob.join(created.room_id)
        for i in range(5):
            sent = await alice.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": f"m{i}"})
            self.assertIsInstance(sent, RoomSendResponse)
        await bob.sync(timeout=0)
        get(f"{self.server.url}/_matrix/client/v3/no/such/endpoint")

        families = self.scrape()
        requests = families["palisade_http_requests"]
        send = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"
        sends = self.samples(requests, endpoint=send, method="PUT", status="200")
        self.assertEqual(sum(s.value for s in sends if s.name.endswith("_total")), 5, sorted({s.labels["endpoint"] for s in requests.samples}))
        unknown = self.samples(requests, endpoint="unmatched", status="404")
        self.assertTrue(unknown, [s for s in requests.samples][:20])
        latency = families["palisade_http_request_duration_seconds"]
        counts = [s for s in self.samples(latency, endpoint=send) if s.name.endswith("_count")]
        self.assertEqual(counts[0].value, 5)
        buckets = [s for s in self.samples(latency, endpoint=send) if s.name.endswith("_bucket")]
        self.assertEqual(buckets[-1].labels["le"], "+Inf")
        self.assertEqual(buckets[-1].value, 5)
        batches = families["palisade_storage_batch_duration_seconds"]
        synced = [s for s in self.samples(batches, durability="synced") if s.name.endswith("_count")]
        self.assertGreater(synced[0].value, 6)
        storage = families["palisade_storage_property"]
        live = self.samples(storage, property="rocksdb.estimate-num-keys")
        self.assertGreater(live[0].value, 0)

        # A held sync shows while it waits, and goes when it returns (first syncs drain
        # what is new: the delivered receipts of the messages Bob was handed, say).
        for _ in range(3):
            await bob.sync(timeout=0, since=bob.next_batch)
        waiting = bob.sync(timeout=3000, since=bob.next_batch)
        task = asyncio.ensure_future(waiting)
        await asyncio.sleep(1)
        held = self.scrape()
        self.assertGreaterEqual(held["palisade_sync_waiters"].samples[0].value, 1)
        await task
        self.assertEqual(self.scrape()["palisade_sync_waiters"].samples[0].value, 0)

        # The probes, on the metrics listener and on the client listener.
        for base in (self.metrics_url, self.server.url):
            status, _, body = get(f"{base}/health")
            self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
            status, _, body = get(f"{base}/ready")
            self.assertEqual((status, json.loads(body)), (200, {"status": "ready"}))

        # A request id given by a proxy comes back and marks the request's log lines; one
        # is made up when none is given.
        body = json.dumps({"client_secret": "s3cret", "country": "GB", "phone_number": "07400123456", "send_attempt": 1})
        request = urllib.request.Request(
            f"{self.server.url}/_matrix/client/v3/register/msisdn/requestToken",
            data=body.encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": "proxy-req-42"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            self.assertEqual(response.headers["X-Request-Id"], "proxy-req-42")
        log = ""
        for _ in range(50):
            log = (self.server.path / "server.log").read_text()
            if "verification code not sent" in log:
                break
            time.sleep(0.1)
        lines = [line for line in log.splitlines() if "verification code not sent" in line]
        self.assertTrue(lines and "proxy-req-42" in lines[-1], lines)
        _, headers, _ = get(f"{self.server.url}/_matrix/client/versions")
        self.assertRegex(headers["X-Request-Id"], r"^[A-Za-z0-9]{16}$")


if __name__ == "__main__":
    unittest.main()
