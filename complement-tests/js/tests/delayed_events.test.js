// Delayed events (MSC4140) through matrix-js-sdk's API for them, as Element Call uses it
// for a group call's "left the call" state: scheduled, listed, restarted, cancelled,
// sent early (with a token, and without one by the delay id alone as a call's focus
// service does), sent by the server when the delay runs out, and cancelled when someone
// else sets the same state first.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, register, eventually } from "./harness.js";

const CALL_MEMBER = "org.matrix.msc3401.call.member";

test("delayed events are scheduled, restarted, cancelled, sent early or when due", async (t) => {
  const server = await startServer();
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  t.after(() => server.stop());
  const { room_id: roomId } = await alice.createRoom({
    invite: [bob.getUserId()],
    power_level_content_override: { users: { [alice.getUserId()]: 100, [bob.getUserId()]: 50 } },
  });
  await bob.joinRoom(roomId);
  assert.ok(await alice.doesServerSupportUnstableFeature("org.matrix.msc4140"));

  const stateKey = `_${alice.getUserId()}_DEVICE`;
  const state = async (key) => {
    try {
      return await bob.getStateEvent(roomId, CALL_MEMBER, key);
    } catch (error) {
      if (error.errcode === "M_NOT_FOUND") return undefined;
      throw error;
    }
  };
  await alice.sendStateEvent(roomId, CALL_MEMBER, { application: "m.call", call_id: "" }, stateKey);

  // The leave, 1.5 s ahead, kept back by restarts.
  const { delay_id: leave } = await alice._unstable_sendDelayedStateEvent(roomId, { delay: 1500 }, CALL_MEMBER, {}, stateKey);
  assert.ok(leave);
  const { delayed_events: waiting } = await alice._unstable_getDelayedEvents();
  assert.deepEqual(
    waiting.map((d) => [d.delay_id, d.room_id, d.type, d.state_key, d.delay]),
    [[leave, roomId, CALL_MEMBER, stateKey, 1500]],
  );
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 700));
    await alice._unstable_updateDelayedEvent(leave, "restart");
  }
  assert.equal((await state(stateKey)).application, "m.call", "restarts keep it back");
  // The app dies: no more restarts, the server sends the leave.
  await eventually(async () => Object.keys((await state(stateKey)) ?? { x: 1 }).length === 0, 5000, "the leave");
  assert.deepEqual((await alice._unstable_getDelayedEvents()).delayed_events, []);

  // A message cancelled never comes; one sent early comes at once.
  const texts = async () =>
    (await bob.createMessagesRequest(roomId, null, 50, "b")).chunk
      .filter((e) => e.type === "m.room.message")
      .map((e) => e.content.body);
  const { delay_id: cancelled } = await alice._unstable_sendDelayedEvent(roomId, { delay: 60000 }, null, "m.room.message", {
    msgtype: "m.text",
    body: "never",
  });
  await alice._unstable_updateDelayedEvent(cancelled, "cancel");
  const { delay_id: early } = await alice._unstable_sendDelayedEvent(roomId, { delay: 60000 }, null, "m.room.message", {
    msgtype: "m.text",
    body: "early",
  });
  await alice._unstable_updateDelayedEvent(early, "send");
  assert.deepEqual(await texts(), ["early"]);
  await assert.rejects(alice._unstable_updateDelayedEvent(cancelled, "send"), (e) => e.errcode === "M_NOT_FOUND");

  // Without a token, by the delay id (the path form); someone else's id with a token is
  // not found.
  const { delay_id: byId } = await alice._unstable_sendDelayedEvent(roomId, { delay: 60000 }, null, "m.room.message", {
    msgtype: "m.text",
    body: "by id",
  });
  await assert.rejects(bob._unstable_updateDelayedEvent(byId, "send"), (e) => e.errcode === "M_NOT_FOUND");
  const response = await fetch(
    `${server.baseUrl}/_matrix/client/unstable/org.matrix.msc4140/delayed_events/${encodeURIComponent(byId)}/send`,
    { method: "POST", body: "{}" },
  );
  assert.equal(response.status, 200);
  assert.deepEqual(await texts(), ["by id", "early"]);

  // Someone else sets the state first: the delayed change is cancelled.
  const { delay_id: overtaken } = await alice._unstable_sendDelayedStateEvent(roomId, { delay: 60000 }, "m.room.topic", {
    topic: "alice's, later",
  });
  await bob.setRoomTopic(roomId, "bob's, now");
  await eventually(async () => (await alice._unstable_getDelayedEvents()).delayed_events.length === 0, 5000, "the cancel");
  await assert.rejects(alice._unstable_updateDelayedEvent(overtaken, "send"), (e) => e.errcode === "M_NOT_FOUND");

  // Too long a delay is refused as MSC4140 says, with the longest allowed, which is what
  // matrix-js-sdk's call membership reads to schedule its leave again within it.
  await assert.rejects(
    alice._unstable_sendDelayedEvent(roomId, { delay: 10 * 24 * 3600 * 1000 }, null, "m.room.message", { body: "x" }),
    (e) =>
      e.httpStatus === 400 &&
      e.errcode === "M_UNKNOWN" &&
      e.data["org.matrix.msc4140.errcode"] === "M_MAX_DELAY_EXCEEDED" &&
      e.data["org.matrix.msc4140.max_delay"] === 24 * 3600 * 1000,
  );
});
