"""Black-box test: 1:1 call signalling. The m.call.* events pass through a DM in order,
and the callee's push rules ring for the invite (.m.rule.call: notify with the "ring"
sound), which /notifications shows; the invite moves the room up a room list sorted by
activity (sliding sync's bump_stamp), the rest of the signalling does not."""

import unittest
import urllib.parse

from harness import Server
from test_appservice import call


class CallsTest(unittest.TestCase):
    def setUp(self):
        self.server = Server()

    def tearDown(self):
        self.server.stop()

    def user(self, name):
        status, body = call(
            self.server,
            "POST",
            "/_matrix/client/v3/register",
            body={"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        self.assertEqual(status, 200, body)
        return body["user_id"], body["access_token"]

    def test_a_call_rings_and_its_signalling_passes_through(self):
        alice, alice_token = self.user("alice")
        bob, bob_token = self.user("bob")
        status, room = call(
            self.server,
            "POST",
            "/_matrix/client/v3/createRoom",
            alice_token,
            {"preset": "trusted_private_chat", "is_direct": True, "invite": [bob]},
        )
        self.assertEqual(status, 200, room)
        room_id = urllib.parse.quote(room["room_id"])
        status, body = call(self.server, "POST", f"/_matrix/client/v3/join/{room_id}", bob_token, {})
        self.assertEqual(status, 200, body)

        offer = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
        signalling = [
            ("m.call.invite", {"call_id": "c1", "party_id": "a", "version": "1", "lifetime": 60000, "offer": offer}),
            ("m.call.candidates", {"call_id": "c1", "party_id": "a", "version": "1", "candidates": [
                {"candidate": "candidate:1 1 UDP 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
            ]}),
            ("m.call.hangup", {"call_id": "c1", "party_id": "a", "version": "1", "reason": "user_hangup"}),
        ]
        sent = []
        for n, (kind, content) in enumerate(signalling):
            status, body = call(
                self.server, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/{kind}/c{n}", alice_token, content
            )
            self.assertEqual(status, 200, body)
            sent.append(body["event_id"])

        status, page = call(self.server, "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=50", bob_token)
        self.assertEqual(status, 200, page)
        seen = [(e["event_id"], e["type"]) for e in page["chunk"] if e["type"].startswith("m.call.")]
        self.assertEqual(seen, list(zip(sent, [kind for kind, _ in signalling])))

        status, found = call(self.server, "GET", "/_matrix/client/v3/notifications", bob_token)
        self.assertEqual(status, 200, found)
        rang = [n for n in found["notifications"] if n["event"]["event_id"] == sent[0]]
        self.assertEqual(len(rang), 1, found)
        self.assertIn("notify", rang[0]["actions"])
        self.assertIn({"set_tweak": "sound", "value": "ring"}, rang[0]["actions"])

    def bump_stamps(self, token):
        status, body = call(
            self.server,
            "POST",
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            token,
            {"lists": {"all": {"ranges": [[0, 20]], "timeline_limit": 1}}},
        )
        self.assertEqual(status, 200, body)
        return {room_id: room["bump_stamp"] for room_id, room in body["rooms"].items()}

    def test_a_call_invite_moves_its_room_up_the_list(self):
        alice, alice_token = self.user("alice")
        bob, bob_token = self.user("bob")
        rooms = []
        for body in ({"preset": "trusted_private_chat", "is_direct": True, "invite": [bob]}, {"invite": [bob]}):
            status, room = call(self.server, "POST", "/_matrix/client/v3/createRoom", alice_token, body)
            self.assertEqual(status, 200, room)
            room_id = urllib.parse.quote(room["room_id"])
            status, joined = call(self.server, "POST", f"/_matrix/client/v3/join/{room_id}", bob_token, {})
            self.assertEqual(status, 200, joined)
            rooms.append(room["room_id"])
        dm, group = rooms

        def send(room, kind, txn, content):
            status, body = call(
                self.server,
                "PUT",
                f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/{kind}/{txn}",
                alice_token,
                content,
            )
            self.assertEqual(status, 200, body)

        send(group, "m.room.message", "t1", {"msgtype": "m.text", "body": "the group is busier"})
        stamps = self.bump_stamps(bob_token)
        self.assertGreater(stamps[group], stamps[dm], stamps)

        offer = {"type": "offer", "sdp": "v=0\r\n"}
        send(dm, "m.call.invite", "c1", {"call_id": "c2", "party_id": "a", "version": "1", "lifetime": 60000, "offer": offer})
        stamps = self.bump_stamps(bob_token)
        self.assertGreater(stamps[dm], stamps[group], stamps)

        # The rest of the signalling is not activity: the group's next message wins.
        send(group, "m.room.message", "t2", {"msgtype": "m.text", "body": "meanwhile"})
        send(dm, "m.call.hangup", "c3", {"call_id": "c2", "party_id": "a", "version": "1"})
        stamps = self.bump_stamps(bob_token)
        self.assertGreater(stamps[group], stamps[dm], stamps)


if __name__ == "__main__":
    unittest.main()
