"""Black-box test: end-to-bridge encryption as the mautrix bridges do it in appservice
mode. The bridge bot logs in with m.login.application_service, uploads its keys, and
hears everything through its transactions: to-device messages (MSC4203), one-time key
counts and device lists (MSC3202). A real user's encrypted client (matrix-nio) and the
bridge (mautrix's OlmMachine) then read each other's encrypted messages."""

import asyncio
import tempfile
import unittest

from harness import Server, free_port
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.client import Client
from mautrix.crypto import OlmMachine
from mautrix.crypto.store.abstract import StateStore as CryptoStateStore
from mautrix.crypto.store.memory import MemoryCryptoStore
from mautrix.types import (
    EncryptedEvent,
    EventType,
    LoginType,
    RoomEncryptionStateEventContent,
    EncryptionAlgorithm,
    TextMessageEventContent,
    MessageType,
    UserID,
)
from nio import AsyncClient, AsyncClientConfig, MegolmEvent, RoomMessageText

from test_appservice import acall

REGISTRATION = """id: signal
url: http://127.0.0.1:{port}
as_token: signal-as-token
hs_token: signal-hs-token
sender_localpart: signalbot
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
namespaces:
  users:
    - exclusive: true
      regex: '@signal_.*:localhost'
  aliases: []
  rooms: []
"""


class Rooms(CryptoStateStore):
    """The crypto state mautrix's machine asks about: one encrypted room, its members."""

    def __init__(self):
        self.room_id = None
        self.members = []

    async def is_encrypted(self, room_id):
        return room_id == self.room_id

    async def get_encryption_info(self, room_id):
        if room_id != self.room_id:
            return None
        return RoomEncryptionStateEventContent(algorithm=EncryptionAlgorithm.MEGOLM_V1)

    async def find_shared_rooms(self, user_id):
        return [self.room_id] if user_id in self.members else []


class EncryptedBridgeTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.port = free_port()
        self.server = Server()
        path = self.server.path / "signal.yaml"
        path.write_text(REGISTRATION.format(port=self.port))
        self.server.kill()
        text = self.server.config.read_text()
        self.server.config.write_text(text.replace("[global]\n", f'[global]\napp_service_config_files = ["{path}"]\n'))
        self.server.start()
        self.store_dir = tempfile.TemporaryDirectory()
        self.closers = []

    async def asyncTearDown(self):
        for close in reversed(self.closers):
            await close()

    def tearDown(self):
        self.server.stop()
        self.store_dir.cleanup()

    async def test_a_real_users_encrypted_client_and_the_bridge_read_each_other(self):
        await self.encrypted_chat(msc4190=False)

    async def test_the_same_with_the_bots_device_made_by_the_appservice(self):
        """MSC4190: no login; the bridge makes its bot's device with PUT /devices and acts
        on it through its own token (device masquerading, MSC3202's device_id)."""
        await self.encrypted_chat(msc4190=True)

    async def encrypted_chat(self, msc4190: bool):
        heard = []
        service = AppService(
            server=self.server.url,
            domain="localhost",
            as_token="signal-as-token",
            hs_token="signal-hs-token",
            bot_localpart="signalbot",
            id="signal",
            state_store=FileASStateStore(path=str(self.server.path / "as-state.json"), binary=False),
            ephemeral_events=True,
            encryption_events=True,
        )

        async def on_event(event):
            heard.append(event)

        service.matrix_event_handler(on_event)
        await service.start(host="127.0.0.1", port=self.port)
        self.closers.append(service.stop)

        # The bot's device: logged in with the appservice's token, its keys uploaded.
        bot = Client(base_url=self.server.url, mxid=UserID("@signalbot:localhost"))
        bot.api.token = "signal-as-token"
        if msc4190:
            await bot.create_device_msc4190(device_id="SIGNALBRIDGE", initial_display_name="bridge")
        else:
            await bot.login(login_type=LoginType.APPSERVICE, device_name="bridge", store_access_token=True)
        self.closers.append(bot.api.session.close)
        rooms = Rooms()
        machine = OlmMachine(bot, MemoryCryptoStore("signalbot", "pickle"), rooms)
        await machine.load()
        await machine.share_keys()
        service.otk_handler = machine.handle_as_otk_counts
        service.device_list_handler = machine.handle_as_device_lists
        service.to_device_handler = machine.handle_as_to_device_event

        # Alice, with matrix-nio's encryption.
        status, body = await acall(
            self.server,
            "POST",
            "/_matrix/client/v3/register",
            body={"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        self.assertEqual(status, 200, body)
        alice = AsyncClient(
            self.server.url,
            "@alice:localhost",
            store_path=self.store_dir.name,
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
        )
        self.closers.append(alice.close)
        await alice.login("pw")
        await alice.sync(timeout=0, full_state=True)
        if alice.should_upload_keys:
            await alice.keys_upload()

        # An encrypted portal room: the bot makes it, alice joins.
        room_id = await service.intent.create_room(
            name="Encrypted portal",
            invitees=[UserID("@alice:localhost")],
            initial_state=[
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
            ],
        )
        rooms.room_id = room_id
        rooms.members = [UserID("@alice:localhost"), UserID("@signalbot:localhost")]
        await alice.join(room_id)
        await alice.sync(timeout=0)
        if alice.should_query_keys:
            await alice.keys_query()

        # Alice -> bridge: the room key reaches the bot's device in a transaction
        # (to-device), the message in another; the bridge decrypts it.
        sent = await alice.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "secret hello"},
            ignore_unverified_devices=True,
        )
        self.assertTrue(getattr(sent, "event_id", None), sent)
        decrypted = None
        for _ in range(400):
            for event in heard:
                if isinstance(event, EncryptedEvent) and event.event_id == sent.event_id:
                    try:
                        decrypted = await machine.decrypt_megolm_event(event)
                    except Exception:
                        decrypted = None
            if decrypted:
                break
            await asyncio.sleep(0.05)
        self.assertIsNotNone(decrypted, "the bridge could not decrypt alice's message")
        self.assertEqual(decrypted.content.body, "secret hello")

        # Bridge -> alice: the bot shares a session with alice's device and sends.
        await machine.share_group_session(room_id, rooms.members)
        content = await machine.encrypt_megolm_event(
            room_id, EventType.ROOM_MESSAGE, TextMessageEventContent(msgtype=MessageType.TEXT, body="secret reply")
        )
        await service.intent.send_message_event(room_id, EventType.ROOM_ENCRYPTED, content)
        reply = None
        for _ in range(40):
            response = await alice.sync(timeout=500)
            timeline = response.rooms.join.get(room_id)
            for event in timeline.timeline.events if timeline else []:
                if isinstance(event, RoomMessageText) and event.body == "secret reply":
                    reply = event
                if isinstance(event, MegolmEvent):
                    decrypted_event = alice.decrypt_event(event)
                    if isinstance(decrypted_event, RoomMessageText):
                        reply = decrypted_event
            if reply:
                break
        self.assertIsNotNone(reply, "alice could not decrypt the bridge's message")
        self.assertEqual(reply.sender, "@signalbot:localhost")


if __name__ == "__main__":
    unittest.main()
