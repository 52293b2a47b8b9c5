// End-to-end encryption between matrix-js-sdk clients with the Rust crypto stack (what
// Element Web runs): megolm room messages, cross-signing, device list changes and
// to-device messages, all through this server.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  startServer,
  register,
  login,
  passwordOf,
  startWithCrypto,
  eventually,
  waitForDecrypted,
  quietSdkLogs,
  sdk,
} from "./harness.js";

quietSdkLogs();

const MEGOLM = "m.megolm.v1.aes-sha2";
const PATIENCE = 20000;

/** A server with Alice and Bob, both running crypto, in an encrypted room. */
async function encryptedPair(t) {
  const server = await startServer();
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  const clients = [alice, bob];
  t.after(async () => {
    for (const client of clients) client.stopClient();
    await server.stop();
  });
  await startWithCrypto(alice);
  await startWithCrypto(bob);
  const { room_id: roomId } = await alice.createRoom({
    preset: "private_chat",
    invite: [bob.getUserId()],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
  });
  await eventually(() => bob.getRoom(roomId)?.getMyMembership() === "invite", PATIENCE, "bob's invite");
  await bob.joinRoom(roomId);
  for (const [me, other] of [
    [alice, bob],
    [bob, alice],
  ]) {
    await eventually(
      async () =>
        me.getRoom(roomId)?.getMember(other.getUserId())?.membership === "join" &&
        (await me.getCrypto().isEncryptionEnabledInRoom(roomId)),
      PATIENCE,
      `${me.getUserId()} to see ${other.getUserId()} in the encrypted room`,
    );
  }
  return { server, alice, bob, roomId, clients };
}

/** A raw client-API request with `client`'s access token; returns the JSON body. */
async function raw(server, client, method, path, body) {
  const response = await fetch(`${server.baseUrl}${path}`, {
    method,
    headers: { Authorization: `Bearer ${client.getAccessToken()}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.equal(response.status, 200, `${method} ${path} answered ${response.status}: ${JSON.stringify(json)}`);
  return json;
}

/** Sends `text` from `sender`; `receiver` must decrypt exactly it. Returns the event id. */
async function sendAndDecrypt(sender, receiver, roomId, text) {
  const { event_id: eventId } = await sender.sendTextMessage(roomId, text);
  const event = await waitForDecrypted(receiver, roomId, eventId, PATIENCE);
  assert.equal(event.getContent().body, text);
  assert.equal(event.getSender(), sender.getUserId());
  assert.equal(event.getWireType(), "m.room.encrypted");
  assert.equal(event.getWireContent().algorithm, MEGOLM);
  return eventId;
}

test("messages in an encrypted room are decrypted by the other side, both ways", { timeout: 60000 }, async (t) => {
  const { server, alice, bob, roomId } = await encryptedPair(t);

  const hello = await sendAndDecrypt(alice, bob, roomId, "Hello Bob, this is secret");
  const reply = await sendAndDecrypt(bob, alice, roomId, "Hi Alice, so is this");

  // The server only ever held ciphertext.
  for (const [eventId, text] of [
    [hello, "Hello Bob, this is secret"],
    [reply, "Hi Alice, so is this"],
  ]) {
    const stored = await raw(server, bob, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(eventId)}`);
    assert.equal(stored.type, "m.room.encrypted");
    assert.equal(stored.content.algorithm, MEGOLM);
    assert.equal(typeof stored.content.ciphertext, "string");
    assert.ok(!JSON.stringify(stored).includes(text), "the plaintext reached the server");
  }

  // Each device keeps one-time keys and a fallback key on the server, and sync says so.
  for (const client of [alice, bob]) {
    const sync = await raw(server, client, "GET", "/_matrix/client/v3/sync?timeout=0");
    assert.ok(sync.device_one_time_keys_count?.signed_curve25519 > 0, JSON.stringify(sync.device_one_time_keys_count));
    assert.deepEqual(sync.device_unused_fallback_key_types, ["signed_curve25519"]);
  }

  // A later message in the same megolm session decrypts too.
  await sendAndDecrypt(alice, bob, roomId, "and a second one");
});

test("cross-signing: the first upload needs no UIA, a reset needs the password, and Bob sees both identities", { timeout: 60000 }, async (t) => {
  const { server, alice, bob } = await encryptedPair(t);
  const aliceId = alice.getUserId();
  const aliceDevice = alice.getDeviceId();

  // Tries without auth first; answers a UIA challenge with the password.
  const challenges = [];
  const authUploadDeviceSigningKeys = async (makeRequest) => {
    try {
      return await makeRequest(null);
    } catch (error) {
      if (error.httpStatus !== 401 || !error.data?.session) throw error;
      challenges.push(error.data);
      return await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: aliceId },
        password: passwordOf("alice"),
        session: error.data.session,
      });
    }
  };

  await alice.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys });
  assert.deepEqual(challenges, [], "the first cross-signing upload asked for UIA");
  assert.ok(await alice.getCrypto().isCrossSigningReady());
  // Her client knows the key id it created, and the server serves the same one.
  const masterOnServer = async () => {
    const answer = await raw(server, alice, "POST", "/_matrix/client/v3/keys/query", { device_keys: { [aliceId]: [] } });
    return Object.keys(answer.master_keys[aliceId].keys)[0].replace(/^ed25519:/, "");
  };
  const firstMaster = await masterOnServer();
  assert.equal(await alice.getCrypto().getCrossSigningKeyId(), firstMaster);

  // Bob already tracks Alice (they share an encrypted room): only a device list change
  // in his sync makes his client fetch her keys again.
  await eventually(() => bob.getCrypto().userHasCrossSigningKeys(aliceId), PATIENCE, "bob to see alice's cross-signing keys");
  await eventually(
    async () => (await bob.getCrypto().getDeviceVerificationStatus(aliceId, aliceDevice))?.signedByOwner,
    PATIENCE,
    "bob to see alice's device signed by her self-signing key",
  );
  const query = await raw(server, bob, "POST", "/_matrix/client/v3/keys/query", { device_keys: { [aliceId]: [] } });
  assert.deepEqual(Object.keys(query.master_keys[aliceId].keys), [`ed25519:${firstMaster}`]);
  assert.ok(query.self_signing_keys[aliceId], "no self-signing key for alice");
  assert.equal(query.user_signing_keys?.[aliceId], undefined, "bob was shown alice's user-signing key");
  assert.ok((await bob.getCrypto().getUserVerificationStatus(aliceId)).needsUserApproval === false);

  // Replacing the master key needs UIA; the password answers it.
  await alice.getCrypto().bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys });
  assert.equal(challenges.length, 1, "replacing the cross-signing keys did not ask for UIA");
  assert.ok(
    challenges[0].flows.some((flow) => flow.stages.includes("m.login.password")),
    JSON.stringify(challenges[0].flows),
  );
  // The server serves the new master key at once. Alice's own client is not asked: a key
  // query it sent before the reset may answer after it, and the Rust crypto stack then
  // drops its new private keys (a race in the client, whatever the server).
  const secondMaster = await masterOnServer();
  assert.notEqual(secondMaster, firstMaster, "the server still serves the first master key");

  // Bob's client notices the new identity (it pinned the first one) ...
  await eventually(
    async () => (await bob.getCrypto().getUserVerificationStatus(aliceId)).needsUserApproval,
    PATIENCE,
    "bob to notice alice's new master key",
  );
  // ... and the server serves it.
  const again = await raw(server, bob, "POST", "/_matrix/client/v3/keys/query", { device_keys: { [aliceId]: [] } });
  assert.deepEqual(Object.keys(again.master_keys[aliceId].keys), [`ed25519:${secondMaster}`]);
  const selfSigning = Object.keys(again.self_signing_keys[aliceId].keys)[0];
  assert.ok(again.device_keys[aliceId][aliceDevice].signatures[aliceId][selfSigning], "the device is not signed by the new self-signing key");
});

test("a new device of Alice's reaches Bob's device list and /keys/changes, receives his messages, and leaves the list on logout", { timeout: 60000 }, async (t) => {
  const { server, alice, bob, roomId, clients } = await encryptedPair(t);
  const aliceId = alice.getUserId();
  const bobDevicesOfAlice = async () => [...((await bob.getCrypto().getUserDeviceInfo([aliceId])).get(aliceId)?.keys() ?? [])].sort();

  // Bob's client has Alice's first device (it encrypted for it already).
  await sendAndDecrypt(bob, alice, roomId, "before the second device");
  assert.deepEqual(await bobDevicesOfAlice(), [alice.getDeviceId()]);

  const { next_batch: from } = await raw(server, bob, "GET", "/_matrix/client/v3/sync?timeout=0");
  const laptop = await login(server.baseUrl, aliceId, passwordOf("alice"), "Alice's laptop");
  clients.push(laptop);
  await startWithCrypto(laptop);
  const expected = [alice.getDeviceId(), laptop.getDeviceId()].sort();
  await eventually(
    async () => JSON.stringify(await bobDevicesOfAlice()) === JSON.stringify(expected),
    PATIENCE,
    "bob to list alice's new device",
  );
  // /keys/changes names Alice between a sync token from before the login and one after.
  const { next_batch: to } = await raw(server, bob, "GET", "/_matrix/client/v3/sync?timeout=0");
  const changes = await raw(server, bob, "GET", `/_matrix/client/v3/keys/changes?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
  assert.ok(changes.changed.includes(aliceId), JSON.stringify(changes));

  // Bob's next message is encrypted for both of Alice's devices.
  await eventually(() => laptop.getRoom(roomId)?.getMyMembership() === "join", PATIENCE, "the laptop to see the room");
  const { event_id: eventId } = await bob.sendTextMessage(roomId, "for all of Alice's devices");
  for (const device of [alice, laptop]) {
    const event = await waitForDecrypted(device, roomId, eventId, PATIENCE);
    assert.equal(event.getContent().body, "for all of Alice's devices");
  }

  // Logging the laptop out takes it off Bob's list.
  laptop.stopClient();
  await laptop.logout(true);
  await eventually(
    async () => JSON.stringify(await bobDevicesOfAlice()) === JSON.stringify([alice.getDeviceId()]),
    PATIENCE,
    "bob to drop alice's logged-out device",
  );
});

test("device_lists in sync: a user who newly shares an encrypted room is changed, one who shares none any more has left", { timeout: 60000 }, async (t) => {
  const { server, alice, bob, roomId, clients } = await encryptedPair(t);
  const carol = await register(server, "carol");
  clients.push(carol);
  await startWithCrypto(carol);

  /** Alice's raw syncs from `since` until `found` accepts one's device_lists. */
  const aliceSyncsUntil = async (since, found, what) =>
    eventually(
      async () => {
        const sync = await raw(server, alice, "GET", `/_matrix/client/v3/sync?timeout=1000&since=${encodeURIComponent(since)}`);
        since = sync.next_batch;
        return found(sync.device_lists ?? {});
      },
      PATIENCE,
      what,
    );

  const { next_batch: beforeJoin } = await raw(server, alice, "GET", "/_matrix/client/v3/sync?timeout=0");
  await alice.invite(roomId, carol.getUserId());
  await eventually(() => carol.getRoom(roomId)?.getMyMembership() === "invite", PATIENCE, "carol's invite");
  await carol.joinRoom(roomId);
  await aliceSyncsUntil(beforeJoin, (lists) => lists.changed?.includes(carol.getUserId()), "carol in alice's device_lists.changed");

  // Carol's client, new in the room, decrypts what Alice sends now.
  await eventually(async () => carol.getCrypto().isEncryptionEnabledInRoom(roomId), PATIENCE, "carol to see the room encrypted");
  await sendAndDecrypt(alice, carol, roomId, "welcome, Carol");

  const beforeLeave = (await raw(server, alice, "GET", "/_matrix/client/v3/sync?timeout=0")).next_batch;
  await bob.leave(roomId);
  await aliceSyncsUntil(beforeLeave, (lists) => lists.left?.includes(bob.getUserId()), "bob in alice's device_lists.left");
  await sendAndDecrypt(alice, carol, roomId, "Bob has gone");
});

test("to-device messages: plain ones arrive once each in order, and Olm-encrypted ones decrypt", { timeout: 60000 }, async (t) => {
  const { alice, bob } = await encryptedPair(t);
  const received = [];
  bob.on(sdk.ClientEvent.ToDeviceEvent, (event) => {
    if (event.getType().startsWith("org.example.")) {
      received.push({ type: event.getType(), sender: event.getSender(), content: event.getContent() });
    }
  });
  const toBob = (content) => new Map([[bob.getUserId(), new Map([[bob.getDeviceId(), content]])]]);

  await alice.sendToDevice("org.example.plain", toBob({ n: 1 }));
  await alice.sendToDevice("org.example.plain", toBob({ n: 2 }));
  // To every device of Bob's.
  await alice.sendToDevice("org.example.plain", new Map([[bob.getUserId(), new Map([["*", { n: 3 }]])]]));
  await eventually(() => received.length >= 3, PATIENCE, "three to-device messages");

  const batch = await alice
    .getCrypto()
    .encryptToDeviceMessages("org.example.secret", [{ userId: bob.getUserId(), deviceId: bob.getDeviceId() }], {
      secret: "only for Bob's device",
    });
  assert.equal(batch.eventType, "m.room.encrypted");
  await alice.queueToDevice(batch);
  await eventually(() => received.length >= 4, PATIENCE, "the encrypted to-device message");

  assert.deepEqual(received, [
    { type: "org.example.plain", sender: alice.getUserId(), content: { n: 1 } },
    { type: "org.example.plain", sender: alice.getUserId(), content: { n: 2 } },
    { type: "org.example.plain", sender: alice.getUserId(), content: { n: 3 } },
    { type: "org.example.secret", sender: alice.getUserId(), content: { secret: "only for Bob's device" } },
  ]);
});
