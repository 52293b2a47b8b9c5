// Threads, edits, reactions, unread counts, search and push as matrix-js-sdk (the
// library Element Web uses) sees them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startServer, register, eventually, quietSdkLogs, sdk } from "./harness.js";

quietSdkLogs();

/** Starts a client's sync loop with thread support, as Element Web runs it. */
async function startWithThreads(client) {
  const ready = new Promise((done) => {
    client.on(sdk.ClientEvent.Sync, (state) => {
      if (state === "PREPARED" || state === "SYNCING") done();
    });
  });
  await client.startClient({
    initialSyncLimit: 20,
    threadSupport: true,
    pendingEventOrdering: sdk.PendingEventOrdering.Detached,
  });
  await ready;
}

/**
 * Sends an event straight through the API (no local echo): what is checked is how the
 * other client shows it.
 */
let txn = 0;
async function send(client, roomId, type, content) {
  const path = `/rooms/${encodeURIComponent(roomId)}/send/${type}/t${txn++}`;
  return client.http.authedRequest(sdk.Method.Put, path, undefined, content);
}

/** Alice's room with Bob in it, both clients seeing him joined. */
async function roomOfTwo(alice, bob) {
  const { room_id: roomId } = await alice.createRoom({ preset: "private_chat", invite: [bob.getUserId()] });
  await bob.joinRoom(roomId);
  return roomId;
}

/** A push gateway on loopback that records what it is sent. */
async function recordingGateway() {
  const received = [];
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      received.push(JSON.parse(body).notification);
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ rejected: [] }));
    });
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${server.address().port}/_matrix/push/v1/notify`,
    received,
    close: () => new Promise((done) => server.close(done)),
  };
}

test("a thread, an edit, a reaction taken back and a mention, as the other client shows them", async (t) => {
  const server = await startServer();
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  t.after(async () => {
    alice.stopClient();
    bob.stopClient();
    await server.stop();
  });
  await startWithThreads(alice);
  await startWithThreads(bob);
  const roomId = await roomOfTwo(alice, bob);
  await eventually(() => bob.getRoom(roomId), 10000, "bob's room");

  // A thread: Alice's root, Bob's replies. Alice's client lists it with its replies.
  const { event_id: rootId } = await alice.sendTextMessage(roomId, "who is up for a walk?");
  for (const body of ["me", "me too, at noon"]) {
    await send(bob, roomId, "m.room.message", {
      msgtype: "m.text",
      body,
      "m.relates_to": {
        rel_type: "m.thread",
        event_id: rootId,
        is_falling_back: true,
        "m.in_reply_to": { event_id: rootId },
      },
    });
  }
  const thread = await eventually(() => alice.getRoom(roomId).getThread(rootId), 10000, "the thread");
  await eventually(() => thread.length === 2, 10000, "two replies in the thread");
  assert.equal(thread.replyToEvent?.getContent().body, "me too, at noon");
  // The server's /threads lists it too.
  const threads = await alice.http.authedRequest(
    sdk.Method.Get,
    `/rooms/${encodeURIComponent(roomId)}/threads`,
    { include: "all" },
    undefined,
    { prefix: "/_matrix/client/v1" },
  );
  assert.deepEqual(
    threads.chunk.map((event) => event.event_id),
    [rootId],
    JSON.stringify(threads),
  );
  assert.equal(threads.chunk[0].unsigned["m.relations"]["m.thread"].count, 2);

  // An edit: Bob's client shows the new text in place of the old.
  await send(alice, roomId, "m.room.message", {
    msgtype: "m.text",
    body: "* who is up for a run?",
    "m.new_content": { msgtype: "m.text", body: "who is up for a run?" },
    "m.relates_to": { rel_type: "m.replace", event_id: rootId },
  });
  await eventually(
    () => bob.getRoom(roomId).findEventById(rootId)?.getContent().body === "who is up for a run?",
    10000,
    "the edit applied",
  );

  // A reaction, then taken back: Alice's client counts it, then no more.
  const { event_id: reactionId } = await send(bob, roomId, "m.reaction", {
    "m.relates_to": { rel_type: "m.annotation", event_id: rootId, key: "👍" },
  });
  const thumbs = () =>
    alice
      .getRoom(roomId)
      .relations.getChildEventsForEvent(rootId, "m.annotation", "m.reaction")
      ?.getSortedAnnotationsByKey()
      ?.find(([key]) => key === "👍")?.[1].size ?? 0;
  await eventually(() => thumbs() === 1, 10000, "the reaction counted");
  await bob.redactEvent(roomId, reactionId);
  await eventually(() => thumbs() === 0, 10000, "the reaction taken back");

  // A mention highlights for Bob; his read receipt clears the count.
  const { event_id: mentionId } = await send(alice, roomId, "m.room.message", {
    msgtype: "m.text",
    body: "bob, bring water",
    "m.mentions": { user_ids: [bob.getUserId()] },
  });
  const bobRoom = bob.getRoom(roomId);
  await eventually(
    () => bobRoom.getUnreadNotificationCount(sdk.NotificationCountType.Highlight) === 1,
    10000,
    "one highlight",
  );
  const mention = await eventually(() => bobRoom.findEventById(mentionId), 10000, "the mention");
  await bob.sendReadReceipt(mention, sdk.ReceiptType.Read, true);
  await eventually(
    () =>
      bobRoom.getUnreadNotificationCount(sdk.NotificationCountType.Total) === 0 &&
      bobRoom.getUnreadNotificationCount(sdk.NotificationCountType.Highlight) === 0,
    10000,
    "the counts cleared",
  );

  // Search finds the mention by one of its words, once the index has taken it (the
  // index commits about once a second).
  const found = await eventually(
    async () => {
      const { results } = await bob.searchRoomEvents({ term: "water" });
      return results.length > 0 && results;
    },
    10000,
    "the search to find the mention",
  );
  assert.deepEqual(
    found.map((result) => result.context.getEvent().getId()),
    [mentionId],
  );
});

test("a phone gets pushes for a room while its app is away and none while it syncs", async (t) => {
  const gateway = await recordingGateway();
  const server = await startServer(
    'push = { gateway_ip_allow = ["127.0.0.0/8"], syncing_grace_secs = 1 }',
  );
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  t.after(async () => {
    alice.stopClient();
    bob.stopClient();
    await server.stop();
    await gateway.close();
  });
  await startWithThreads(bob);
  const roomId = await roomOfTwo(alice, bob);
  await bob.setPusher({
    kind: "http",
    app_id: "org.example.app",
    pushkey: "bob-phone",
    app_display_name: "Example",
    device_display_name: "Phone",
    lang: "en",
    data: { url: gateway.url },
  });

  // While Bob's app syncs, Alice's message is not pushed.
  const { event_id: whileSyncing } = await alice.sendTextMessage(roomId, "are you there?");
  await eventually(() => bob.getRoom(roomId)?.findEventById(whileSyncing), 10000, "bob to get it");
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(gateway.received.filter((n) => n.event_id === whileSyncing).length, 0);

  // Bob's app goes away; the next message reaches his phone with the room's count.
  bob.stopClient();
  await new Promise((r) => setTimeout(r, 1500));
  const { event_id: whileAway } = await alice.sendTextMessage(roomId, "call me");
  const push = await eventually(
    () => gateway.received.find((n) => n.event_id === whileAway),
    10000,
    "the push",
  );
  assert.equal(push.room_id, roomId);
  assert.equal(push.content.body, "call me");
  assert.equal(push.devices[0].pushkey, "bob-phone");
  assert.ok(push.counts.unread >= 1, JSON.stringify(push.counts));
});
