// Server-side key backup as Element uses it: matrix-js-sdk's Rust crypto backs Alice's room
// keys up to the server, and a new device of hers, holding only her recovery key, restores
// them and reads her encrypted history.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BackupDecryptionKey, LoggerLevel, Tracing } from "@matrix-org/matrix-sdk-crypto-wasm";
import { decodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { startServer, register, start, eventually, sdk } from "./harness.js";

logger.setLevel("warn");

const BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2";

/** The password `register` in harness.js gives a user. */
const passwordOf = (username) => `${username}-correct-horse`;

/** Secret-storage callbacks of a device that keeps the secret storage keys it creates. */
function cachingCallbacks(known) {
  return {
    getSecretStorageKey: async ({ keys }) => {
      const keyId = Object.keys(keys).find((id) => known.has(id));
      return keyId ? [keyId, known.get(keyId)] : null;
    },
    cacheSecretStorageKey: (keyId, _keyInfo, key) => known.set(keyId, key),
  };
}

/** Secret-storage callbacks of a device whose user types in her recovery key when asked. */
function recoveryKeyPrompt(encodedRecoveryKey) {
  return {
    getSecretStorageKey: async ({ keys }) => {
      const [keyId] = Object.keys(keys);
      return [keyId, decodeRecoveryKey(encodedRecoveryKey)];
    },
  };
}

/** A client with Rust crypto in memory for an already logged-in device. */
async function cryptoClient(server, { access_token, user_id, device_id }, cryptoCallbacks) {
  const client = sdk.createClient({
    baseUrl: server.baseUrl,
    accessToken: access_token,
    userId: user_id,
    deviceId: device_id,
    cryptoCallbacks,
  });
  await client.initRustCrypto({ useIndexedDB: false });
  // initRustCrypto turns the crypto library's tracing on at debug level.
  new Tracing(LoggerLevel.Warn).turnOn();
  return client;
}

function credentials(client) {
  return { access_token: client.getAccessToken(), user_id: client.getUserId(), device_id: client.getDeviceId() };
}

/** Answers user-interactive auth with the account password, as a user types it. */
function passwordAuth(userId, password) {
  return async (makeRequest) => {
    let session;
    try {
      return await makeRequest(null);
    } catch (error) {
      session = error.data?.session;
      if (error.httpStatus !== 401 || !session) throw error;
    }
    const identifier = { type: "m.id.user", user: userId };
    return makeRequest({ type: "m.login.password", identifier, password, session });
  };
}

/** A raw client-server API call; returns the status and the JSON body. */
async function api(server, accessToken, method, path, body) {
  const response = await fetch(`${server.baseUrl}/_matrix/client/v3${path}`, {
    method,
    headers: { authorization: `Bearer ${accessToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** Pages the room's timeline back to its start. */
async function scrollToStart(client, room) {
  while (room.getLiveTimeline().getPaginationToken(sdk.EventTimeline.BACKWARDS) !== null) {
    await client.scrollback(room, 50);
  }
}

/** The encrypted events of the room's live timeline, oldest first. */
function encryptedEvents(room) {
  return room
    .getLiveTimeline()
    .getEvents()
    .filter((event) => event.getWireType() === "m.room.encrypted");
}

function plaintexts(events) {
  return events.map((event) => (event.isDecryptionFailure() ? null : event.getContent().body));
}

test("a new device restores Alice's room keys from the server-side backup and reads her history", async (t) => {
  const started = Date.now();
  const server = await startServer();
  const clients = [];
  t.after(async () => {
    for (const client of clients) client.stopClient();
    await server.stop();
  });

  // Alice's first device and Bob, both with Rust crypto.
  const aliceKeys = new Map();
  const alice = await cryptoClient(
    server,
    credentials(await register(server, "alice")),
    cachingCallbacks(aliceKeys),
  );
  const bob = await cryptoClient(server, credentials(await register(server, "bob")), {});
  clients.push(alice, bob);
  const aliceId = alice.getUserId();
  const token = alice.getAccessToken();
  bob.on(sdk.RoomMemberEvent.Membership, (_event, member) => {
    if (member.membership === "invite" && member.userId === bob.getUserId()) bob.joinRoom(member.roomId);
  });
  await start(alice);
  await start(bob);

  // Alice sets up recovery as Element does: cross-signing (authorised by her password),
  // secret storage under a new recovery key, and a new key backup whose key is kept there.
  const crypto = alice.getCrypto();
  const recoveryKey = await crypto.createRecoveryKeyFromPassphrase();
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth(aliceId, passwordOf("alice")) });
  await crypto.bootstrapSecretStorage({
    createSecretStorageKey: async () => recoveryKey,
    setupNewSecretStorage: true,
    setupNewKeyBackup: true,
  });
  assert.equal(aliceKeys.size, 1, "the new secret storage key was handed to the app");
  const created = await api(server, token, "GET", "/room_keys/version");
  assert.equal(created.status, 200);
  const version = created.body.version;
  assert.equal(created.body.algorithm, BACKUP_ALGORITHM);
  assert.equal(created.body.count, 0);
  assert.equal(typeof created.body.auth_data.public_key, "string");
  assert.ok(created.body.auth_data.signatures[aliceId][`ed25519:${alice.getDeviceId()}`], "signed by her device");
  await eventually(async () => (await crypto.getActiveSessionBackupVersion()) === version, 10000, "backup to be active");

  // An encrypted room with Bob; Alice's messages come in two megolm sessions, Bob's in a third.
  const { room_id: roomId } = await alice.createRoom({
    invite: [bob.getUserId()],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  await eventually(() => bob.getRoom(roomId)?.getMyMembership() === "join", 10000, "bob to join");
  const bobInRoom = () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join";
  await eventually(bobInRoom, 10000, "alice to see bob");
  for (const body of ["alice 1", "alice 2", "alice 3"]) await alice.sendTextMessage(roomId, body);
  await bob.sendTextMessage(roomId, "bob 1");
  const expected = ["alice 1", "alice 2", "alice 3", "bob 1", "alice 4", "alice 5"];
  const bobRead = () => plaintexts(encryptedEvents(alice.getRoom(roomId))).includes("bob 1");
  await eventually(bobRead, 10000, "alice to read bob");
  await crypto.forceDiscardSession(roomId);
  for (const body of ["alice 4", "alice 5"]) await alice.sendTextMessage(roomId, body);
  // Sent events join the live timeline when the server echoes them back.
  const sent = await eventually(() => {
    const events = encryptedEvents(alice.getRoom(roomId));
    return events.length === expected.length && events;
  }, 10000, "alice's timeline to hold all six messages");
  assert.deepEqual(plaintexts(sent), expected);
  const sessions = new Set(sent.map((event) => event.getWireContent().session_id));
  assert.equal(sessions.size, 3);

  // The backup uploads each session's key once; the server counts and serves exactly those.
  const backedUp = await eventually(
    async () => {
      const current = await api(server, token, "GET", "/room_keys/version");
      return current.body.count === sessions.size && current.body;
    },
    30000,
    "three keys in the backup",
  );
  assert.equal(backedUp.version, version);
  assert.notEqual(backedUp.etag, created.body.etag, "the etag moves when keys are added");
  const keys = await api(server, token, "GET", `/room_keys/keys?version=${version}`);
  assert.equal(keys.status, 200);
  assert.deepEqual(Object.keys(keys.body.rooms), [roomId]);
  assert.deepEqual(new Set(Object.keys(keys.body.rooms[roomId].sessions)), sessions);
  for (const data of Object.values(keys.body.rooms[roomId].sessions)) {
    assert.equal(data.first_message_index, 0);
    assert.equal(data.forwarded_count, 0);
    assert.deepEqual(Object.keys(data.session_data).sort(), ["ciphertext", "ephemeral", "mac"]);
  }

  // Alice loses that device, and Bob goes offline: no one can share keys with her new one.
  alice.stopClient();
  bob.stopClient();

  // She logs in on a new device and types in her recovery key.
  const login = await sdk.createClient({ baseUrl: server.baseUrl }).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: "alice" },
    password: passwordOf("alice"),
  });
  assert.notEqual(login.device_id, alice.getDeviceId());
  const phone = await cryptoClient(server, login, recoveryKeyPrompt(recoveryKey.encodedPrivateKey));
  clients.push(phone);
  await start(phone);
  const room = await eventually(() => phone.getRoom(roomId), 10000, "the room on the new device");
  await scrollToStart(phone, room);
  const history = encryptedEvents(room);
  assert.equal(history.length, expected.length);
  await eventually(() => history.every((event) => event.isDecryptionFailure()), 10000, "history to fail to decrypt");

  const phoneCrypto = phone.getCrypto();
  await phoneCrypto.loadSessionBackupPrivateKeyFromSecretStorage();
  const check = await phoneCrypto.checkKeyBackupAndEnable();
  assert.equal(check.backupInfo.version, version);
  assert.equal(check.trustInfo.matchesDecryptionKey, true);
  const restored = await phoneCrypto.restoreKeyBackup();
  assert.deepEqual(restored, { total: sessions.size, imported: sessions.size });
  const decrypted = () => history.every((event) => !event.isDecryptionFailure() && !event.isBeingDecrypted());
  await eventually(decrypted, 10000, "history to decrypt");
  assert.deepEqual(plaintexts(history), expected);
  assert.deepEqual(
    history.map((event) => event.getSender()),
    [aliceId, aliceId, aliceId, bob.getUserId(), aliceId, aliceId],
  );

  // The rest talks to the server directly, with no client of Alice's left to upload keys.
  phone.stopClient();

  // A worse copy of a key (a later first index) leaves the stored one in place.
  const [someSession] = sessions;
  const stored = keys.body.rooms[roomId].sessions[someSession];
  const path = `/room_keys/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(someSession)}`;
  const worse = await api(server, token, "PUT", `${path}?version=${version}`, { ...stored, first_message_index: 2 });
  assert.equal(worse.status, 200);
  assert.equal(worse.body.count, sessions.size);
  assert.deepEqual((await api(server, token, "GET", `${path}?version=${version}`)).body, stored);

  // Once a new backup version exists, uploads to the old one are refused with the new one's
  // number; the old version keeps its keys until deleted.
  const newKey = BackupDecryptionKey.createRandomKey().megolmV1PublicKey.publicKeyBase64;
  const next = await api(server, token, "POST", "/room_keys/version", {
    algorithm: BACKUP_ALGORITHM,
    auth_data: { public_key: newKey },
  });
  assert.equal(next.status, 200);
  assert.notEqual(next.body.version, version);
  const stale = await api(server, token, "PUT", `/room_keys/keys?version=${version}`, keys.body);
  assert.equal(stale.status, 403);
  assert.equal(stale.body.errcode, "M_WRONG_ROOM_KEYS_VERSION");
  assert.equal(stale.body.current_version, next.body.version);
  const stalePath = await api(server, token, "PUT", `${path}?version=${version}`, stored);
  assert.equal(stalePath.status, 403);
  assert.equal(stalePath.body.current_version, next.body.version);
  const latest = await api(server, token, "GET", "/room_keys/version");
  assert.equal(latest.body.version, next.body.version);
  assert.equal(latest.body.count, 0);
  assert.equal(latest.body.auth_data.public_key, newKey);
  const old = await api(server, token, "GET", `/room_keys/version/${version}`);
  assert.equal(old.body.count, sessions.size);
  assert.equal(old.body.etag, backedUp.etag, "refused uploads change nothing");

  t.diagnostic(`took ${Date.now() - started} ms`);
});
