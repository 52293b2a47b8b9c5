// Stories: a room of type org.palisade.story made by its author with the audience
// invited. The audience sees the story and can react and mark it viewed, but not post;
// views are for the author's eyes only; others see nothing; and once the story's
// lifetime (4 s here) is over its events and media are gone and the room leaves the
// members' room lists.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, register } from "./harness.js";

const STORY = "org.palisade.story";

async function rejects(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("the request succeeded");
}

/** One /sync with no wait, raw: what the server hands this user now. */
async function syncOnce(client, since) {
  const query = since ? `?timeout=0&since=${since}` : "?timeout=0";
  return client.http.authedRequest("GET", `/sync${query}`);
}

async function download(client, mxc) {
  const url = client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
  const response = await fetch(url, { headers: { authorization: `Bearer ${client.getAccessToken()}` } });
  return response.status;
}

test("a story is seen by its audience only, views go to its author, and it is gone after its lifetime", { timeout: 60000 }, async (t) => {
  const server = await startServer(`
[global.stories]
lifetime_secs = 4

[global.retention]
purge_interval_secs = 1
`);
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  const dave = await register(server, "dave");
  const carol = await register(server, "carol");
  t.after(() => server.stop());

  // Alice posts a photo story to her close friends, Bob and Dave.
  const photo = Buffer.from("a photo, as far as this test cares");
  const { content_uri: photoUri } = await alice.uploadContent(photo, { name: "story.jpg", type: "image/jpeg" });
  const { room_id: story } = await alice.createRoom({
    creation_content: { type: STORY },
    preset: "private_chat",
    invite: [bob.getUserId(), dave.getUserId()],
  });
  const retention = await alice.getStateEvent(story, "m.room.retention", "");
  assert.equal(retention.max_lifetime, 4000);
  const { event_id: posted } = await alice.sendMessage(story, { msgtype: "m.image", body: "story.jpg", url: photoUri });
  await bob.joinRoom(story);
  await dave.joinRoom(story);

  // Bob sees it and its photo; he can react and mark it viewed but not post.
  const seen = await bob.createMessagesRequest(story, null, 10, "b");
  assert.ok(seen.chunk.some((event) => event.event_id === posted));
  assert.equal(await download(bob, photoUri), 200);
  const post = await rejects(bob.sendMessage(story, { msgtype: "m.text", body: "nice" }));
  assert.equal(post.errcode, "M_FORBIDDEN");
  await bob.sendEvent(story, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: posted, key: "❤️" } });
  await bob.http.authedRequest("POST", `/rooms/${encodeURIComponent(story)}/receipt/m.read/${encodeURIComponent(posted)}`, undefined, {});

  // Carol, not in the audience, sees nothing.
  const outsider = await rejects(carol.createMessagesRequest(story, null, 10, "b"));
  assert.equal(outsider.errcode, "M_FORBIDDEN");
  const fetched = await rejects(carol.fetchRoomEvent(story, posted));
  assert.ok([403, 404].includes(fetched.httpStatus));

  // Views: Alice sees Bob's; Dave sees none but his own.
  const aliceSync = await syncOnce(alice);
  const aliceReceipts = JSON.stringify(aliceSync.rooms.join[story].ephemeral.events);
  assert.match(aliceReceipts, /@bob:localhost/);
  await dave.http.authedRequest("POST", `/rooms/${encodeURIComponent(story)}/receipt/m.read/${encodeURIComponent(posted)}`, undefined, {});
  const daveSync = await syncOnce(dave);
  const daveReceipts = JSON.stringify(daveSync.rooms.join[story].ephemeral.events);
  assert.doesNotMatch(daveReceipts, /@bob:localhost/);
  assert.match(daveReceipts, /@dave:localhost/);

  // After its lifetime the story is gone: the event, the timeline, the photo, and the
  // room from everyone's room list.
  const deadline = Date.now() + 20000;
  let joined;
  for (;;) {
    ({ joined_rooms: joined } = await alice.getJoinedRooms());
    if (!joined.includes(story) || Date.now() > deadline) break;
    await new Promise((wake) => setTimeout(wake, 250));
  }
  assert.ok(!joined.includes(story), "the expired story is still in Alice's rooms");
  assert.ok(!(await bob.getJoinedRooms()).joined_rooms.includes(story));
  const gone = await rejects(alice.fetchRoomEvent(story, posted));
  assert.equal(gone.httpStatus, 404);
  assert.equal(await download(alice, photoUri), 404);
  const history = await alice.createMessagesRequest(story, null, 50, "b");
  assert.ok(!history.chunk.some((event) => event.type === "m.room.message" || event.type === "m.reaction"), JSON.stringify(history.chunk));
});
