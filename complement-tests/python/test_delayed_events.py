"""Black-box test: delayed events (MSC4140) survive a kill -9 of the server. A group
call member's scheduled leave is still sent when it comes due after the restart, and one
not due yet is still waiting, with its delay id; a user has at most the configured
number waiting."""

import time
import unittest
import urllib.parse

from harness import Server
from test_appservice import call

PREFIX = "/_matrix/client/unstable/org.matrix.msc4140"


class DelayedEventsTest(unittest.TestCase):
    def setUp(self):
        self.server = Server("[global.delayed_events]\nmax_per_user = 2\n")

    def tearDown(self):
        self.server.stop()

    def test_waiting_events_outlive_a_crash(self):
        status, alice = call(
            self.server,
            "POST",
            "/_matrix/client/v3/register",
            body={"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        self.assertEqual(status, 200, alice)
        token = alice["access_token"]
        status, room = call(self.server, "POST", "/_matrix/client/v3/createRoom", token, {})
        self.assertEqual(status, 200, room)
        room_id = urllib.parse.quote(room["room_id"])
        key = urllib.parse.quote("_@alice:localhost_PHONE")
        member = f"/_matrix/client/v3/rooms/{room_id}/state/org.matrix.msc3401.call.member/{key}"
        status, body = call(self.server, "PUT", member, token, {"application": "m.call", "call_id": ""})
        self.assertEqual(status, 200, body)

        status, soon = call(self.server, "PUT", f"{member}?org.matrix.msc4140.delay=2000", token, {})
        self.assertEqual(status, 200, soon)
        self.assertNotIn("event_id", soon)
        status, later = call(
            self.server,
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/1?org.matrix.msc4140.delay=600000",
            token,
            {"msgtype": "m.text", "body": "later"},
        )
        self.assertEqual(status, 200, later)
        # A retried send (same transaction id) gets the same delay id, not a second event.
        status, again = call(
            self.server,
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/1?org.matrix.msc4140.delay=600000",
            token,
            {"msgtype": "m.text", "body": "later"},
        )
        self.assertEqual((status, again), (200, later))
        status, body = call(
            self.server,
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/2?org.matrix.msc4140.delay=1000",
            token,
            {"msgtype": "m.text", "body": "one too many"},
        )
        self.assertEqual((status, body.get("errcode")), (400, "M_LIMIT_EXCEEDED"), body)

        self.server.kill()
        self.server.start()

        deadline = time.time() + 15
        while time.time() < deadline:
            status, state = call(self.server, "GET", member, token)
            if status == 200 and state == {}:
                break
            time.sleep(0.1)
        self.assertEqual((status, state), (200, {}), "the leave was not sent after the restart")
        status, listed = call(self.server, "GET", f"{PREFIX}/delayed_events", token)
        self.assertEqual(status, 200, listed)
        self.assertEqual([d["delay_id"] for d in listed["delayed_events"]], [later["delay_id"]])
        self.assertEqual(listed["delayed_events"][0]["content"]["body"], "later")


if __name__ == "__main__":
    unittest.main()
