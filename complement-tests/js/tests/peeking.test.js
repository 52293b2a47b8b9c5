// Room previews and guests, as Element Web uses them through matrix-js-sdk: peeking into
// a world-readable room before joining (`/rooms/{id}/initialSync`, then `/events`), and
// guest accounts that may join rooms letting guests in, nothing more, and can be
// upgraded to full accounts keeping their rooms.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, register, eventually, sdk } from "./harness.js";

function bodies(room) {
  return room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === "m.room.message")
    .map((e) => e.getContent().body);
}

test("a world-readable room is previewed and followed before joining", { timeout: 60000 }, async (t) => {
  const server = await startServer();
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  t.after(async () => {
    bob.stopPeeking();
    await server.stop();
  });
  const { room_id: roomId } = await alice.createRoom({
    preset: "public_chat",
    name: "Open house",
    initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "world_readable" } }],
  });
  await alice.sendTextMessage(roomId, "welcome");

  const room = await bob.peekInRoom(roomId);
  assert.equal(room.name, "Open house");
  assert.deepEqual(bodies(room), ["welcome"]);
  assert.equal(room.getMyMembership(), "leave", "bob is only looking");

  // New messages come through the event stream while Bob looks.
  await alice.sendTextMessage(roomId, "still here");
  await eventually(() => bodies(room).includes("still here"), 20000, "the peeked room to follow");

  // A room that is not world-readable cannot be looked into.
  const { room_id: closed } = await alice.createRoom({ preset: "private_chat" });
  await assert.rejects(bob.peekInRoom(closed), (error) => error.httpStatus === 403);
});

test("a guest joins a room that lets guests in, nothing more, and upgrading keeps its rooms", { timeout: 60000 }, async (t) => {
  const server = await startServer("allow_guest_access = true");
  t.after(() => server.stop());
  const alice = await register(server, "alice");
  const { room_id: open } = await alice.createRoom({
    preset: "public_chat",
    initial_state: [{ type: "m.room.guest_access", state_key: "", content: { guest_access: "can_join" } }],
  });
  const { room_id: members } = await alice.createRoom({ preset: "public_chat" });

  const anonymous = sdk.createClient({ baseUrl: server.baseUrl });
  const credentials = await anonymous.registerGuest();
  const guest = sdk.createClient({
    baseUrl: server.baseUrl,
    accessToken: credentials.access_token,
    userId: credentials.user_id,
    deviceId: credentials.device_id,
  });
  guest.setGuest(true);

  await guest.joinRoom(open);
  await guest.sendTextMessage(open, "hello from a guest");
  const refused = (error) => error.httpStatus === 403 && error.errcode === "M_GUEST_ACCESS_FORBIDDEN";
  await assert.rejects(guest.joinRoom(members), refused);
  await assert.rejects(guest.createRoom({ name: "mine" }), refused);

  // Upgrading: registering with the guest's token keeps the guest's user id.
  const upgrade = async (auth) => {
    const response = await fetch(`${server.baseUrl}/_matrix/client/v3/register`, {
      method: "POST",
      headers: { Authorization: `Bearer ${credentials.access_token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ password: "a long guest password", ...(auth ? { auth } : {}) }),
    });
    return { status: response.status, body: await response.json() };
  };
  const challenge = await upgrade(null);
  assert.equal(challenge.status, 401, JSON.stringify(challenge.body));
  const upgraded = await upgrade({ type: "m.login.dummy", session: challenge.body.session });
  assert.equal(upgraded.status, 200, JSON.stringify(upgraded.body));
  assert.equal(upgraded.body.user_id, credentials.user_id);

  const full = sdk.createClient({
    baseUrl: server.baseUrl,
    accessToken: upgraded.body.access_token,
    userId: upgraded.body.user_id,
    deviceId: upgraded.body.device_id,
  });
  const { joined_rooms: joined } = await full.getJoinedRooms();
  assert.deepEqual(joined, [open]);
  const { room_id: own } = await full.createRoom({ name: "now mine" });
  assert.ok(own, "a full account creates rooms");
  await eventually(async () => {
    const { chunk } = await alice.createMessagesRequest(open, null, 10, "b");
    return chunk.some((e) => e.content?.body === "hello from a guest");
  }, 10000, "alice to see the guest's message");
});
