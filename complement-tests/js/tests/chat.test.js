// Two matrix-js-sdk clients (the library Element Web uses) chatting in real time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, register, start, eventually, sdk } from "./harness.js";

function messages(room) {
  return room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === "m.room.message")
    .map((e) => e.getContent().body);
}

test("two clients chat both ways in order, with typing, receipts, profile changes and a new room name", async (t) => {
  const server = await startServer();
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  t.after(async () => {
    alice.stopClient();
    bob.stopClient();
    await server.stop();
  });
  await start(alice);
  await start(bob);
  bob.on(sdk.RoomMemberEvent.Membership, (_event, member) => {
    if (member.membership === "invite" && member.userId === bob.getUserId()) bob.joinRoom(member.roomId);
  });

  const { room_id: roomId } = await alice.createRoom({
    preset: "trusted_private_chat",
    is_direct: true,
    invite: [bob.getUserId()],
  });
  await eventually(() => bob.getRoom(roomId)?.getMyMembership() === "join", 10000, "bob to join");
  await eventually(() => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join", 10000, "alice to see bob");

  for (let i = 0; i < 3; i++) {
    await alice.sendTextMessage(roomId, `alice ${i}`);
    await bob.sendTextMessage(roomId, `bob ${i}`);
  }
  const expected = ["alice 0", "bob 0", "alice 1", "bob 1", "alice 2", "bob 2"];
  for (const client of [alice, bob]) {
    await eventually(() => messages(client.getRoom(roomId)).length === 6, 10000, "six messages");
    assert.deepEqual(messages(client.getRoom(roomId)), expected);
  }

  await alice.sendTyping(roomId, true, 10000);
  await eventually(() => bob.getRoom(roomId).getMember(alice.getUserId())?.typing, 10000, "typing");
  await alice.sendTyping(roomId, false);
  await eventually(() => !bob.getRoom(roomId).getMember(alice.getUserId())?.typing, 10000, "typing to stop");

  const last = bob.getRoom(roomId).getLiveTimeline().getEvents().at(-1);
  await alice.sendReadReceipt(alice.getRoom(roomId).findEventById(last.getId()));
  await eventually(
    () => bob.getRoom(roomId).getEventReadUpTo(alice.getUserId()) === last.getId(),
    10000,
    "alice's read receipt",
  );

  await alice.setDisplayName("Alice L.");
  await eventually(() => bob.getRoom(roomId).getMember(alice.getUserId())?.name === "Alice L.", 10000, "the new name");

  // matrix-js-sdk asks for the state at the end of each timeline (MSC4222's
  // state_after): a renamed room is renamed for the other client.
  await alice.setRoomName(roomId, "Renamed");
  await eventually(() => bob.getRoom(roomId).name === "Renamed", 10000, "the new room name");
});

test("a client scrolls back through history", async (t) => {
  const server = await startServer();
  const alice = await register(server, "alice");
  t.after(async () => {
    alice.stopClient();
    await server.stop();
  });
  const { room_id: roomId } = await alice.createRoom({ name: "History" });
  for (let i = 0; i < 120; i++) await alice.sendTextMessage(roomId, `${i}`);
  await start(alice);
  const room = await eventually(() => alice.getRoom(roomId), 10000, "the room");
  while (room.getLiveTimeline().getPaginationToken(sdk.EventTimeline.BACKWARDS) !== null && messages(room).length < 120) {
    await alice.scrollback(room, 50);
  }
  assert.deepEqual(messages(room), Array.from({ length: 120 }, (_, i) => `${i}`));
  assert.equal(room.name, "History");
});
