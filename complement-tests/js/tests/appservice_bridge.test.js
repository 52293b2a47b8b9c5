// A bridge built on matrix-appservice-bridge (and so on matrix-bot-sdk, the framework of
// matrix-appservice-irc, -slack and -discord): its bot answers a user's message, and an
// alias of its namespace that names no room yet makes one when a user looks it up.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import bridgeLib from "matrix-appservice-bridge";
import { startServer, register, eventually, quietSdkLogs } from "./harness.js";

const { Bridge, AppServiceRegistration, Logger } = bridgeLib;
quietSdkLogs();
Logger.configure({ console: "error" });

async function freePort() {
  return new Promise((done) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

test("a matrix-appservice-bridge bot answers a message and makes a room for a queried alias", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-bridge-"));
  const port = await freePort();
  const registration = new AppServiceRegistration(`http://127.0.0.1:${port}`);
  registration.setId("irc");
  registration.setHomeserverToken("irc-hs-token");
  registration.setAppServiceToken("irc-as-token");
  registration.setSenderLocalpart("ircbot");
  registration.setRateLimited(false);
  registration.addRegexPattern("users", "@irc_.*:localhost", true);
  registration.addRegexPattern("aliases", "#irc_.*:localhost", true);
  const file = join(dir, "irc.yaml");
  registration.outputAsYaml(file);

  const server = await startServer(`app_service_config_files = ["${file}"]`);
  const seen = [];
  const bridge = new Bridge({
    homeserverUrl: server.baseUrl,
    domain: "localhost",
    registration,
    disableStores: true,
    controller: {
      onUserQuery: () => ({}),
      onEvent: async (request) => {
        const event = request.getData();
        seen.push(event);
        const bot = bridge.getBot().getUserId();
        if (event.type === "m.room.member" && event.state_key === bot && event.content.membership === "invite") {
          await bridge.getIntent().join(event.room_id);
        }
        if (event.type === "m.room.message" && event.content.body === "!ping") {
          await bridge.getIntent().sendText(event.room_id, `pong, ${event.sender}`);
        }
      },
      onAliasQuery: async (_alias, localpart) => ({
        creationOpts: { room_alias_name: localpart, name: `IRC ${localpart}`, preset: "public_chat" },
      }),
    },
  });
  await bridge.run(port, undefined, "127.0.0.1");
  const alice = await register(server, "alice");
  t.after(async () => {
    await bridge.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // Alice invites the bot; the invite reaches the bridge in a transaction and it joins.
  const { room_id: roomId } = await alice.createRoom({ invite: ["@ircbot:localhost"] });
  await eventually(async () => {
    const members = await alice.getJoinedRoomMembers(roomId);
    return Boolean(members.joined["@ircbot:localhost"]);
  }, 15000, "the bot to join");
  await alice.sendTextMessage(roomId, "!ping");
  await eventually(async () => {
    const page = await alice.createMessagesRequest(roomId, null, 20, "b");
    return page.chunk.some(
      (event) => event.sender === "@ircbot:localhost" && event.content.body === "pong, @alice:localhost",
    );
  }, 15000, "the bot's answer");
  assert.ok(seen.some((event) => event.type === "m.room.message" && event.content.body === "!ping"));

  // An alias of the bridge's namespace that names no room: the bridge is asked and
  // makes one; alice joins it by the alias.
  const { room_id: lobby } = await alice.getRoomIdForAlias("#irc_lobby:localhost");
  assert.ok(lobby);
  await alice.joinRoom("#irc_lobby:localhost");
  const name = await alice.getStateEvent(lobby, "m.room.name", "");
  assert.equal(name.name, "IRC irc_lobby");
  await assert.rejects(alice.getRoomIdForAlias("#elsewhere:localhost"), (error) => error.errcode === "M_NOT_FOUND");
});
