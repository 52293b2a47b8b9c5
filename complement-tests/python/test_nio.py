"""Black-box test: the palisade binary driven by matrix-nio, the Python client library
bots and many bridges use, through a new user's first steps and a bot's file transfer."""

import unittest

from harness import Server
from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    DownloadResponse,
    ThumbnailResponse,
    UploadResponse,
)


class NioWalkthrough(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.server = Server()
        self.clients = []

    async def asyncTearDown(self):
        for client in self.clients:
            await client.close()

    def tearDown(self):
        self.server.stop()

    def client(self, user: str) -> AsyncClient:
        client = AsyncClient(self.server.url, user)
        self.clients.append(client)
        return client

    async def test_a_new_users_first_steps(self):
        alice, bob = self.client("alice"), self.client("bob")
        self.assertIsInstance(await alice.register("alice", "alice-password", "laptop"), RegisterResponse)
        self.assertIsInstance(await bob.register("bob", "bob-password"), RegisterResponse)
        phone = self.client("@alice:localhost")
        self.assertIsInstance(await phone.login("alice-password", device_name="phone"), LoginResponse)
        self.assertNotEqual(phone.device_id, alice.device_id)

        created = await alice.room_create(name="Lunch", topic="where?", invite=["@bob:localhost"], is_direct=True)
        self.assertIsInstance(created, RoomCreateResponse)
        room_id = created.room_id
        sync = await bob.sync(timeout=1000)
        self.assertIn(room_id, sync.rooms.invite)
        self.assertIsInstance(await bob.join(room_id), JoinResponse)

        for i in range(3):
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"hello {i}"})
            self.assertIsInstance(sent, RoomSendResponse)
        sync = await bob.sync(timeout=1000, since=bob.next_batch)
        bodies = [e.body for e in sync.rooms.join[room_id].timeline.events if isinstance(e, RoomMessageText)]
        self.assertEqual(bodies, ["hello 0", "hello 1", "hello 2"])

        await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "pizza"})
        await phone.sync(timeout=1000)
        room = phone.rooms[room_id]
        self.assertEqual(room.display_name, "Lunch")
        self.assertEqual(room.topic, "where?")
        self.assertEqual(sorted(room.users), ["@alice:localhost", "@bob:localhost"])
        history = await phone.room_messages(room_id, start=phone.next_batch, limit=4)
        self.assertIsInstance(history, RoomMessagesResponse)
        self.assertEqual([getattr(e, "body", None) for e in history.chunk], ["pizza", "hello 2", "hello 1", "hello 0"])

        await alice.set_displayname("Alice W.")
        await bob.sync(timeout=1000, since=bob.next_batch)
        self.assertEqual(bob.rooms[room_id].user_name("@alice:localhost"), "Alice W.")
        await alice.room_leave(room_id)
        await bob.sync(timeout=1000, since=bob.next_batch)
        self.assertEqual(sorted(bob.rooms[room_id].users), ["@bob:localhost"])

    async def test_a_bot_sends_a_file_and_another_downloads_it(self):
        """What bots and bridges do with media: upload, send the URI, download it."""
        alice, bob = self.client("alice"), self.client("bob")
        await alice.register("alice", "alice-password")
        await bob.register("bob", "bob-password")
        report = bytes(range(256)) * 40
        uploaded, _ = await alice.upload(lambda *_: report, content_type="application/pdf", filename="report.pdf", filesize=len(report))
        self.assertIsInstance(uploaded, UploadResponse)
        self.assertTrue(uploaded.content_uri.startswith("mxc://localhost/"))
        downloaded = await bob.download(mxc=uploaded.content_uri)
        self.assertIsInstance(downloaded, DownloadResponse)
        self.assertEqual(downloaded.body, report)
        self.assertEqual(downloaded.filename, "report.pdf")
        self.assertEqual(downloaded.content_type, "application/pdf")
        # A PDF has no thumbnail: the spec's 400, which nio reports as an error.
        server, media_id = uploaded.content_uri.removeprefix("mxc://").split("/", 1)
        thumbnail = await bob.thumbnail(server, media_id, 32, 32)
        self.assertNotIsInstance(thumbnail, ThumbnailResponse)
        self.assertEqual(thumbnail.transport_response.status, 400)


if __name__ == "__main__":
    unittest.main()
