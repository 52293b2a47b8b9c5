// What a new user meets on their first day with any client, through matrix-js-sdk (the
// library Element Web uses) and plain HTTP where the library hides the wire shape.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, register, start, eventually, sdk } from "./harness.js";

async function raw(server, client, method, path, body) {
  const response = await fetch(`${server.baseUrl}${path}`, {
    method,
    headers: { Authorization: `Bearer ${client.getAccessToken()}`, "Content-Type": "application/json" },
    body,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

test("names, topics, mentions, flags and logging out work as clients expect", { timeout: 60000 }, async (t) => {
  const server = await startServer();
  const alice = await register(server, "alice");
  const carol = await register(server, "carol");
  t.after(async () => {
    alice.stopClient();
    await server.stop();
  });
  await carol.setDisplayName("Carol Danvers");

  // Element Web bootstraps cross-signing at login only when this flag is set.
  assert.ok(await alice.doesServerSupportUnstableFeature("org.matrix.e2e_cross_signing"));

  // A new direct chat: the invite carries Carol's profile, so Alice's client names it.
  await start(alice);
  const { room_id: dm } = await alice.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [carol.getUserId()], topic: "Lunch plans" });
  await eventually(() => alice.getRoom(dm)?.getMember(carol.getUserId())?.membership === "invite", 10000, "the invite");
  const invite = await raw(server, alice, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/state/m.room.member/${encodeURIComponent(carol.getUserId())}`);
  assert.equal(invite.body.displayname, "Carol Danvers");
  await eventually(() => alice.getRoom(dm)?.name === "Carol Danvers", 10000, "the DM to be named after Carol");

  // The create event names its creator also in room versions that no longer need it:
  // Nheko 0.11 cannot read one without.
  const create = await raw(server, alice, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/state/m.room.create/`);
  assert.equal(create.body.creator, alice.getUserId(), JSON.stringify(create.body));

  // The topic in the spec's shape, beside the plain one.
  const topic = await raw(server, alice, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/state/m.room.topic/`);
  assert.deepEqual(topic.body["m.topic"], { "m.text": [{ mimetype: "text/plain", body: "Lunch plans" }] });
  // Also when a client sets only the plain topic later (as older clients do); the room
  // preview reads it.
  const put = await raw(server, alice, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/state/m.room.topic/`, JSON.stringify({ topic: "Lunch at one" }));
  assert.equal(put.status, 200, JSON.stringify(put.body));
  const later = await raw(server, alice, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/state/m.room.topic/`);
  assert.equal(later.body.topic, "Lunch at one");
  assert.deepEqual(later.body["m.topic"], { "m.text": [{ mimetype: "text/plain", body: "Lunch at one" }] });
  const preview = await raw(server, alice, "GET", `/_matrix/client/v1/room_summary/${encodeURIComponent(dm)}`);
  assert.equal(preview.body.topic, "Lunch at one", JSON.stringify(preview.body));

  // A name change says which event it replaces, so it shows as a change, not a join.
  const joined = await carol.joinRoom(dm);
  await eventually(() => alice.getRoom(dm)?.getMember(carol.getUserId())?.membership === "join", 10000, "carol to join");
  await carol.setDisplayName("Captain Marvel");
  const change = await eventually(() => {
    const events = alice.getRoom(dm).getLiveTimeline().getEvents();
    return events.find((e) => e.getType() === "m.room.member" && e.getContent().displayname === "Captain Marvel");
  }, 10000, "the name change");
  assert.ok(change.getUnsigned().replaces_state, JSON.stringify(change.event));
  assert.equal(change.getPrevContent().membership, "join");
  assert.ok(joined);

  // A message that names Alice without m.mentions highlights (the legacy default rules).
  await carol.sendTextMessage(dm, "alice, are you coming?");
  await eventually(() => alice.getRoom(dm)?.getUnreadNotificationCount("highlight") >= 1, 10000, "a highlight");

  // Logging out with a `null` body, as some client libraries send it.
  const out = await raw(server, carol, "POST", "/_matrix/client/v3/logout", "null");
  assert.equal(out.status, 200, JSON.stringify(out.body));
  const whoami = await raw(server, carol, "GET", "/_matrix/client/v3/account/whoami");
  assert.equal(whoami.status, 401);
  // A PUT body is content: `null` there is still refused.
  const state = await raw(server, alice, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/state/org.example.x/`, "null");
  assert.equal(state.status, 400);
});
