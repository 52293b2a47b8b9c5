"""Black-box test: the palisade binary with bridges built on mautrix-python, the framework
of the mautrix bridges (WhatsApp, Signal, Telegram, ...): a bridge registers ghost users,
makes a portal room, speaks as its ghosts, hears a real user's messages through its
transactions, makes rooms for aliases it is asked about; its transactions survive the
bridge being down and the server being killed."""

import asyncio
import hashlib
import hmac
import json
import unittest
import urllib.error
import urllib.request

from aiohttp import web
from harness import Server, free_port
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, ReceiptType, RoomCreatePreset, UserID


def registration(name: str, port: int, rate_limited: bool = False, exclusive_aliases: bool = True) -> str:
    return f"""id: {name}
url: http://127.0.0.1:{port}
as_token: {name}-as-token
hs_token: {name}-hs-token
sender_localpart: {name}bot
rate_limited: {str(rate_limited).lower()}
de.sorunome.msc2409.push_ephemeral: true
protocols: [{name}]
namespaces:
  users:
    - exclusive: true
      regex: '@{name}_.*:localhost'
  aliases:
    - exclusive: {str(exclusive_aliases).lower()}
      regex: '#{name}_.*:localhost'
  rooms: []
"""


def call(server: Server, method: str, path: str, token: str | None = None, body=None):
    """A raw request: (status, JSON answer)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


async def acall(*args, **kwargs):
    return await asyncio.to_thread(call, *args, **kwargs)


class Bridge:
    """A mautrix AppService that records every event its transactions carry."""

    def __init__(self, name: str, server: Server, port: int):
        self.name, self.server, self.port = name, server, port
        self.events = []
        self.ephemeral = []
        self.service = None

    async def start(self):
        service = AppService(
            server=self.server.url,
            domain="localhost",
            as_token=f"{self.name}-as-token",
            hs_token=f"{self.name}-hs-token",
            bot_localpart=f"{self.name}bot",
            id=self.name,
            state_store=FileASStateStore(
                path=str(self.server.path / f"{self.name}-state.json"), binary=False
            ),
            query_alias=self.query_alias,
            ephemeral_events=True,
        )
        service.matrix_event_handler(self.heard)
        routes = service.app.router
        routes.add_get(f"/_matrix/app/v1/thirdparty/protocol/{self.name}", self.protocol)
        routes.add_get(f"/_matrix/app/v1/thirdparty/location/{self.name}", self.location)
        await service.start(host="127.0.0.1", port=self.port)
        self.service = service

    async def stop(self):
        if self.service:
            await self.service.stop()
            self.service = None

    async def heard(self, event):
        if getattr(event, "event_id", None):
            self.events.append(event)
        else:
            self.ephemeral.append(event)

    async def query_alias(self, alias):
        """A room made on demand for an alias of the namespace, as portal bridges do."""
        localpart = alias.split(":")[0][1:]
        await self.service.intent.create_room(
            alias_localpart=localpart, preset=RoomCreatePreset.PUBLIC, name=f"Portal {localpart}"
        )
        # mautrix answers 404 to a falsy answer: a non-empty one says the room exists.
        return {"room_alias": alias}

    async def protocol(self, _request):
        return web.json_response(
            {
                "user_fields": ["username"],
                "location_fields": ["group"],
                "icon": "mxc://localhost/icon",
                "field_types": {
                    "username": {"regexp": "[a-z0-9_]+", "placeholder": "username"},
                    "group": {"regexp": "[a-z0-9_]+", "placeholder": "group"},
                },
                "instances": [{"desc": self.name.title(), "network_id": "main", "fields": {}}],
            }
        )

    async def location(self, request):
        group = request.query.get("group", "")
        return web.json_response(
            [
                {
                    "alias": f"#{self.name}_{group}:localhost",
                    "protocol": self.name,
                    "fields": {"group": group},
                }
            ]
        )

    def messages(self, sender: str):
        return [
            event.content.body
            for event in self.events
            if event.type == EventType.ROOM_MESSAGE and event.sender == sender
        ]

    async def wait_for(self, sender: str, count: int, timeout: float = 30):
        for _ in range(int(timeout * 20)):
            if len(self.messages(sender)) >= count:
                return self.messages(sender)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} heard {self.messages(sender)} of {sender}")


class AppserviceTest(unittest.IsolatedAsyncioTestCase):
    def start_server(self, names, extra="", rate_limited=(), shared_aliases=()):
        self.ports = {name: free_port() for name in names}
        self.server = Server(extra)
        files = []
        for name, port in self.ports.items():
            path = self.server.path / f"{name}.yaml"
            path.write_text(registration(name, port, name in rate_limited, name not in shared_aliases))
            files.append(f'"{path}"')
        # Registrations are read at start: write them, then start again.
        self.server.kill()
        text = self.server.config.read_text()
        self.server.config.write_text(
            text.replace("[global]\n", f"[global]\napp_service_config_files = [{', '.join(files)}]\n")
        )
        self.server.start()
        self.bridges = {name: Bridge(name, self.server, port) for name, port in self.ports.items()}

    async def asyncTearDown(self):
        for bridge in self.bridges.values():
            await bridge.stop()
        for close in getattr(self, "closers", []):
            await close()

    def tearDown(self):
        self.server.stop()

    async def real_user(self, name: str) -> tuple[str, str]:
        status, body = await acall(
            self.server,
            "POST",
            "/_matrix/client/v3/register",
            body={"username": name, "password": "correct horse", "auth": {"type": "m.login.dummy"}},
        )
        self.assertEqual(status, 200, body)
        return body["user_id"], body["access_token"]

    async def portal(self, bridge: Bridge, alice: str, alice_token: str, ghost: str) -> str:
        """A portal room the bridge's bot makes, alice and a ghost in it."""
        intent = bridge.service.intent
        room_id = await intent.create_room(name="Portal", invitees=[UserID(alice)])
        status, body = await acall(
            self.server, "POST", f"/_matrix/client/v3/join/{room_id}", alice_token, {}
        )
        self.assertEqual(status, 200, body)
        ghost_intent = intent.user(UserID(ghost))
        await ghost_intent.ensure_registered()
        await ghost_intent.ensure_joined(room_id)
        return room_id

    async def test_a_bridge_speaks_as_its_ghosts_and_hears_real_users(self):
        self.start_server(["telegram"])
        bridge = self.bridges["telegram"]
        await bridge.start()
        alice, alice_token = await self.real_user("alice")
        ghost = "@telegram_1001:localhost"
        room_id = await self.portal(bridge, alice, alice_token, ghost)

        # The ghost speaks (masquerading with ?user_id=), the real user sees it.
        ghost_intent = bridge.service.intent.user(UserID(ghost))
        await ghost_intent.send_text(room_id, "hello from telegram")
        status, page = await acall(
            self.server, "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20", alice_token
        )
        self.assertEqual(status, 200, page)
        said = [(e["sender"], e["content"].get("body")) for e in page["chunk"] if e["type"] == "m.room.message"]
        self.assertIn((ghost, "hello from telegram"), said)
        status, who = await acall(
            self.server, "GET", f"/_matrix/client/v3/account/whoami?user_id={ghost}", "telegram-as-token"
        )
        self.assertEqual((status, who["user_id"]), (200, ghost), who)
        self.assertNotIn("device_id", who)

        # The real user's messages reach the bridge in its transactions, in order, once.
        sent = [f"message {n}" for n in range(12)]
        for n, text in enumerate(sent):
            status, body = await acall(
                self.server,
                "PUT",
                f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{n}",
                alice_token,
                {"msgtype": "m.text", "body": text},
            )
            self.assertEqual(status, 200, body)
        self.assertEqual(await bridge.wait_for(alice, len(sent)), sent)
        event_ids = [event.event_id for event in bridge.events]
        self.assertEqual(len(event_ids), len(set(event_ids)), "an event came twice")
        # The ghost's join and message came too: the bridge hears its own users.
        self.assertEqual(bridge.messages(ghost), ["hello from telegram"])

        # Ephemeral events (MSC2409): alice's read receipt and typing reach the bridge.
        last = event_ids[-1]
        status, body = await acall(
            self.server, "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{last}", alice_token, {}
        )
        self.assertEqual(status, 200, body)
        status, body = await acall(
            self.server,
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/typing/{alice}",
            alice_token,
            {"typing": True, "timeout": 10000},
        )
        self.assertEqual(status, 200, body)
        for _ in range(200):
            kinds = {event.type for event in bridge.ephemeral}
            if {EventType.RECEIPT, EventType.TYPING} <= kinds:
                break
            await asyncio.sleep(0.05)
        receipts = [e for e in bridge.ephemeral if e.type == EventType.RECEIPT]
        self.assertTrue(receipts, bridge.ephemeral)
        self.assertEqual(receipts[0].room_id, room_id)
        self.assertIn(alice, receipts[0].content[last][ReceiptType.READ])
        typing = [e for e in bridge.ephemeral if e.type == EventType.TYPING]
        self.assertTrue(typing, bridge.ephemeral)
        self.assertEqual((typing[-1].room_id, typing[-1].content.user_ids), (room_id, [alice]))

        # The bridge pings itself through the server.
        self.assertGreaterEqual(await bridge.service.ping_self("ping-1"), 0)

        # Namespaces: out of bounds for the bridge, reserved for everyone else.
        status, body = await acall(
            self.server, "GET", "/_matrix/client/v3/account/whoami?user_id=@alice:localhost", "telegram-as-token"
        )
        self.assertEqual((status, body.get("errcode")), (403, "M_FORBIDDEN"), body)
        with self.assertRaises(MatrixRequestError) as refused:
            await bridge.service.intent.user(UserID("@someone_else:localhost")).ensure_registered()
        self.assertEqual(refused.exception.errcode, "M_EXCLUSIVE")
        status, body = await acall(
            self.server,
            "POST",
            "/_matrix/client/v3/register",
            body={"username": "telegram_999", "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        self.assertEqual((status, body.get("errcode")), (400, "M_EXCLUSIVE"), body)
        status, body = await acall(
            self.server,
            "PUT",
            "/_matrix/client/v3/directory/room/%23telegram_mine:localhost",
            alice_token,
            {"room_id": room_id},
        )
        self.assertEqual((status, body.get("errcode")), (400, "M_EXCLUSIVE"), body)

        # An alias of the namespace that names no room yet: the bridge is asked and
        # makes one, and the real user joins it.
        status, body = await acall(
            self.server, "GET", "/_matrix/client/v3/directory/room/%23telegram_news:localhost", alice_token
        )
        self.assertEqual(status, 200, body)
        status, joined = await acall(
            self.server, "POST", "/_matrix/client/v3/join/%23telegram_news:localhost", alice_token, {}
        )
        self.assertEqual((status, joined.get("room_id")), (200, body["room_id"]), joined)
        # An alias outside every namespace is simply unknown.
        status, body = await acall(
            self.server, "GET", "/_matrix/client/v3/directory/room/%23nobody:localhost", alice_token
        )
        self.assertEqual((status, body.get("errcode")), (404, "M_NOT_FOUND"), body)

    async def test_a_room_given_an_alias_of_the_namespace_is_heard_from_then_on(self):
        self.start_server(["matrixorg"], shared_aliases=("matrixorg",))
        bridge = self.bridges["matrixorg"]
        await bridge.start()
        alice, alice_token = await self.real_user("alice")
        status, room = await acall(self.server, "POST", "/_matrix/client/v3/createRoom", alice_token, {})
        self.assertEqual(status, 200, room)
        room_id = room["room_id"]

        async def say(n, text):
            status, body = await acall(
                self.server,
                "PUT",
                f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{n}",
                alice_token,
                {"msgtype": "m.text", "body": text},
            )
            self.assertEqual(status, 200, body)

        await say(0, "before the alias")
        # A directory alias only: the room's state does not change.
        status, body = await acall(
            self.server,
            "PUT",
            "/_matrix/client/v3/directory/room/%23matrixorg_general:localhost",
            alice_token,
            {"room_id": room_id},
        )
        self.assertEqual(status, 200, body)
        await say(1, "after the alias")
        self.assertEqual(await bridge.wait_for(alice, 1), ["after the alias"])

    async def test_rate_limits_spare_bridges_unless_their_registration_asks(self):
        limits = "[global.rate_limits.message]\nper_second = 0.1\nburst = 3\n"
        self.start_server(["free", "limited"], extra=limits, rate_limited=("limited",))
        alice, alice_token = await self.real_user("alice")

        async def burst(token, user_id=None, count=8):
            status, room = await acall(
                self.server, "POST", "/_matrix/client/v3/createRoom" + (f"?user_id={user_id}" if user_id else ""),
                token, {},
            )
            self.assertEqual(status, 200, room)
            statuses = []
            for n in range(count):
                query = f"?user_id={user_id}" if user_id else ""
                status, _ = await acall(
                    self.server,
                    "PUT",
                    f"/_matrix/client/v3/rooms/{room['room_id']}/send/m.room.message/{n}{query}",
                    token,
                    {"msgtype": "m.text", "body": str(n)},
                )
                statuses.append(status)
            return statuses

        self.assertIn(429, await burst(alice_token), "a user is limited")
        for name in ("free", "limited"):
            status, body = await acall(
                self.server,
                "POST",
                "/_matrix/client/v3/register",
                f"{name}-as-token",
                {"type": "m.login.application_service", "username": f"{name}_ghost", "inhibit_login": True},
            )
            self.assertEqual(status, 200, body)
        self.assertEqual(set(await burst("free-as-token", "@free_ghost:localhost")), {200})
        self.assertEqual(set(await burst("limited-as-token")), {200}, "the sender is never limited")
        self.assertIn(429, await burst("limited-as-token", "@limited_ghost:localhost"))

    async def test_protocols_lookups_and_network_directories_come_from_the_bridge(self):
        self.start_server(["telegram"])
        bridge = self.bridges["telegram"]
        await bridge.start()
        _, alice_token = await self.real_user("alice")

        status, protocols = await acall(self.server, "GET", "/_matrix/client/v3/thirdparty/protocols", alice_token)
        self.assertEqual(status, 200, protocols)
        instance = protocols["telegram"]["instances"][0]
        self.assertEqual(instance["instance_id"], "telegram|main", protocols)
        self.assertEqual(protocols["telegram"]["location_fields"], ["group"])
        status, body = await acall(self.server, "GET", "/_matrix/client/v3/thirdparty/protocol/irc", alice_token)
        self.assertEqual((status, body.get("errcode")), (404, "M_NOT_FOUND"), body)
        status, found = await acall(
            self.server, "GET", "/_matrix/client/v3/thirdparty/location/telegram?group=news", alice_token
        )
        self.assertEqual((status, found[0]["alias"]), (200, "#telegram_news:localhost"), found)

        # A room listed under the bridge's network is in that network's directory only.
        room_id = await bridge.service.intent.create_room(name="Bridged news")
        status, body = await acall(
            self.server,
            "PUT",
            f"/_matrix/client/v3/directory/list/appservice/main/{room_id}",
            "telegram-as-token",
            {"visibility": "public"},
        )
        self.assertEqual(status, 200, body)
        status, body = await acall(
            self.server,
            "PUT",
            f"/_matrix/client/v3/directory/list/appservice/main/{room_id}",
            alice_token,
            {"visibility": "public"},
        )
        self.assertEqual((status, body.get("errcode")), (403, "M_FORBIDDEN"), body)

        async def listed(filter_body):
            status, page = await acall(self.server, "POST", "/_matrix/client/v3/publicRooms", alice_token, filter_body)
            self.assertEqual(status, 200, page)
            return [room["room_id"] for room in page["chunk"]]

        self.assertIn(room_id, await listed({"third_party_instance_id": "telegram|main"}))
        self.assertNotIn(room_id, await listed({}))
        self.assertIn(room_id, await listed({"include_all_networks": True}))
        self.assertNotIn(room_id, await listed({"third_party_instance_id": "telegram|other"}))

    async def test_a_refused_transaction_comes_again_with_its_id_and_its_events(self):
        self.start_server(["irc"])
        attempts = []  # (transaction id, event ids, status answered)

        async def transaction(request):
            self.assertEqual(request.headers.get("Authorization"), "Bearer irc-hs-token")
            txn = request.match_info["txn"]
            events = [event["event_id"] for event in (await request.json())["events"]]
            status = 200 if any(t == txn for t, _, _ in attempts) else 500
            attempts.append((txn, events, status))
            return web.json_response({}, status=status)

        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", transaction)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.ports["irc"]).start()
        self.closers = [runner.cleanup]

        alice, alice_token = await self.real_user("alice")
        status, room = await acall(
            self.server, "POST", "/_matrix/client/v3/createRoom", "irc-as-token", {"invite": [alice]}
        )
        self.assertEqual(status, 200, room)
        room_id = room["room_id"]
        status, body = await acall(self.server, "POST", f"/_matrix/client/v3/join/{room_id}", alice_token, {})
        self.assertEqual(status, 200, body)
        sent = []
        for n in range(3):
            status, body = await acall(
                self.server,
                "PUT",
                f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{n}",
                alice_token,
                {"msgtype": "m.text", "body": f"irc {n}"},
            )
            self.assertEqual(status, 200, body)
            sent.append(body["event_id"])
        for _ in range(300):
            delivered = [e for _, events, status in attempts if status == 200 for e in events]
            if set(sent) <= set(delivered):
                break
            await asyncio.sleep(0.05)
        await runner.cleanup()
        # Each transaction went twice, the same both times; an event is in one only.
        by_id = {}
        for txn, events, _ in attempts:
            by_id.setdefault(txn, []).append(events)
        for txn, tries in by_id.items():
            self.assertEqual(len(tries), 2, f"transaction {txn}: {tries}")
            self.assertEqual(tries[0], tries[1], f"transaction {txn} changed on retry")
        delivered = [e for _, events, status in attempts if status == 200 for e in events]
        self.assertEqual(len(delivered), len(set(delivered)), "an event came in two transactions")
        self.assertEqual([e for e in delivered if e in sent], sent)

    async def test_transactions_survive_an_outage_and_a_crash(self):
        self.start_server(["whatsapp", "signal"])
        whatsapp, signal = self.bridges["whatsapp"], self.bridges["signal"]
        await whatsapp.start()
        await signal.start()
        alice, alice_token = await self.real_user("alice")
        wa_room = await self.portal(whatsapp, alice, alice_token, "@whatsapp_1:localhost")
        signal_room = await self.portal(signal, alice, alice_token, "@signal_1:localhost")

        async def say(room_id, texts, prefix):
            for n, text in enumerate(texts):
                status, body = await acall(
                    self.server,
                    "PUT",
                    f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{prefix}{n}",
                    alice_token,
                    {"msgtype": "m.text", "body": text},
                )
                self.assertEqual(status, 200, body)

        # WhatsApp's bridge goes down; Signal's keeps hearing alice meanwhile.
        await whatsapp.stop()
        first = [f"while down {n}" for n in range(5)]
        await say(wa_room, first, "a")
        await say(signal_room, ["signal still works"], "s")
        self.assertEqual(await signal.wait_for(alice, 1), ["signal still works"])

        # The server is killed with WhatsApp's transactions pending, more is said after
        # the restart, then the bridge comes back: everything arrives, once, in order.
        self.server.kill()
        self.server.start()
        second = [f"after restart {n}" for n in range(5)]
        await say(wa_room, second, "b")
        await asyncio.sleep(1)
        await whatsapp.start()
        self.assertEqual(await whatsapp.wait_for(alice, 10, timeout=60), first + second)
        ids = [event.event_id for event in whatsapp.events]
        self.assertEqual(len(ids), len(set(ids)), "an event came twice")


class RuntimeRegistrationTest(unittest.IsolatedAsyncioTestCase):
    """An administrator adds a bridge to a running server, without a restart."""

    def setUp(self):
        self.server = Server('registration_shared_secret = "shared"')
        self.bridge = None

    async def asyncTearDown(self):
        if self.bridge:
            await self.bridge.stop()

    def tearDown(self):
        self.server.stop()

    def admin(self) -> str:
        _, body = call(self.server, "GET", "/_synapse/admin/v1/register")
        nonce = body["nonce"]
        mac = hmac.new(b"shared", digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), b"root", b"pw", b"admin"]))
        status, body = call(
            self.server,
            "POST",
            "/_synapse/admin/v1/register",
            body={"nonce": nonce, "username": "root", "password": "pw", "admin": True, "mac": mac.hexdigest()},
        )
        self.assertEqual(status, 200, body)
        return body["access_token"]

    async def test_a_bridge_added_and_removed_at_run_time(self):
        root = await asyncio.to_thread(self.admin)
        port = free_port()
        text = registration("slack", port)
        path = "/_palisade/admin/v1/appservices/slack"

        status, alice = await acall(
            self.server,
            "POST",
            "/_matrix/client/v3/register",
            body={"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        self.assertEqual(status, 200, alice)
        status, body = await acall(self.server, "PUT", path, alice["access_token"], None)
        self.assertEqual((status, body.get("errcode")), (403, "M_FORBIDDEN"), body)

        request = urllib.request.Request(self.server.url + path, data=text.encode(), method="PUT")
        request.add_header("Authorization", f"Bearer {root}")
        with urllib.request.urlopen(request, timeout=10) as response:
            added = json.loads(response.read())
        self.assertEqual((added["id"], added["source"]), ("slack", "admin"))
        self.assertNotIn("as_token", added)

        # The bridge works at once: its bot exists, its ghosts register, it hears alice.
        self.bridge = Bridge("slack", self.server, port)
        await self.bridge.start()
        intent = self.bridge.service.intent
        room_id = await intent.create_room(name="Slack portal", invitees=[UserID(alice["user_id"])])
        status, body = await acall(self.server, "POST", f"/_matrix/client/v3/join/{room_id}", alice["access_token"], {})
        self.assertEqual(status, 200, body)
        status, body = await acall(
            self.server,
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/1",
            alice["access_token"],
            {"msgtype": "m.text", "body": "hi slack"},
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(await self.bridge.wait_for(alice["user_id"], 1), ["hi slack"])

        # It is kept across a restart.
        self.server.kill()
        self.server.start()
        status, who = await acall(self.server, "GET", "/_matrix/client/v3/account/whoami", "slack-as-token")
        self.assertEqual((status, who.get("user_id")), (200, "@slackbot:localhost"), who)

        # Removed, its token is no one's, also after a restart.
        status, body = await acall(self.server, "DELETE", path, root)
        self.assertEqual(status, 200, body)
        for restart in (False, True):
            if restart:
                self.server.kill()
                self.server.start()
            status, body = await acall(self.server, "GET", "/_matrix/client/v3/account/whoami", "slack-as-token")
            self.assertEqual((status, body.get("errcode")), (401, "M_UNKNOWN_TOKEN"), body)
        status, body = await acall(self.server, "GET", "/_palisade/admin/v1/appservices", root)
        self.assertEqual((status, body), (200, {"appservices": []}))


if __name__ == "__main__":
    unittest.main()
