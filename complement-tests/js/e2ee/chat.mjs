// An encrypted conversation between two accounts, possibly on different homeservers,
// each driven by matrix-js-sdk with its Rust crypto stack (as Element Web runs it).
//
//   node e2ee/chat.mjs '<json>'        (or the JSON in the environment variable E2EE_CHAT)
//
// The JSON:
//   {
//     "accounts": [
//       { "base_url": "http://127.0.0.1:8008", "user_id": "@alice:a", "password": "..." },
//       { "base_url": "http://127.0.0.1:8009", "user_id": "@bob:b", "password": "..." }
//     ],
//     "room_id": "!room:a",      optional: a room both accounts have joined
//     "timeout_ms": 60000        optional: the budget of each step
//   }
// An account with a password gets a fresh device by password login; one with
// "access_token" and "device_id" instead uses that device, which must have no keys on
// its server yet (the crypto store here lives in memory only).
//
// Without a room, the first account creates a private room encrypted with
// m.megolm.v1.aes-sha2 and invites the second, which joins. With a room, the first
// account turns encryption on if it is not on yet.
//
// Each side then waits until its client lists the other's device, the first sends a
// message, the second decrypts it, the second replies and the first decrypts that. Then
// each account with a password signs in a second device, which the other side's client
// must list; the other side's next message must decrypt on both devices, and its
// to-device message to "*" reach both; when the second device signs out, the other
// side's client must drop it. Last, each account with a password makes new
// cross-signing keys (answering UIA with the password), and the other side must see the
// signing device signed by them. Every step prints one line to stdout; the last line is
// "ok" (exit 0) or "FAILED: <what>" (exit 1). The SDK's own logs go to stderr when
// E2EE_CHAT_VERBOSE is set, and nowhere otherwise (its warnings and errors always go to
// stderr).
import { randomUUID } from "node:crypto";
import { eventually, login, sdk, startWithCrypto, waitForDecrypted } from "../tests/harness.js";

const MEGOLM = "m.megolm.v1.aes-sha2";
const PING = "org.example.e2ee_chat.ping";

if (process.env.E2EE_CHAT_VERBOSE) {
  console.log = console.info = console.debug = (...args) => console.error(...args);
} else {
  console.log = console.info = console.debug = () => {};
}

function say(line) {
  process.stdout.write(`${line}\n`);
}

let step = "reading the configuration";
const clients = [];
const extraDevices = [];

async function main() {
  const config = JSON.parse(process.argv[2] ?? process.env.E2EE_CHAT ?? "");
  const timeout = config.timeout_ms ?? 60000;
  if (config.accounts?.length !== 2) throw new Error("two accounts are needed");

  for (const account of config.accounts) {
    step = `signing in ${account.user_id}`;
    const client = account.password
      ? await login(account.base_url, account.user_id, account.password, "e2ee chat driver")
      : sdk.createClient({
          baseUrl: account.base_url,
          userId: account.user_id,
          accessToken: account.access_token,
          deviceId: account.device_id,
        });
    clients.push(client);
    step = `starting the crypto of ${account.user_id} (device ${client.getDeviceId()})`;
    await startWithCrypto(client, timeout);
    say(`${client.getUserId()} signed in with device ${client.getDeviceId()}; its keys are on its server`);
  }
  const [first, second] = clients;

  let roomId = config.room_id;
  if (!roomId) {
    step = `${first.getUserId()} creating an encrypted room`;
    ({ room_id: roomId } = await first.createRoom({
      preset: "private_chat",
      invite: [second.getUserId()],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
    }));
    say(`${first.getUserId()} created ${roomId} and invited ${second.getUserId()}`);
    step = `${second.getUserId()} receiving the invite to ${roomId}`;
    await eventually(() => second.getRoom(roomId)?.getMyMembership() === "invite", timeout, step);
    step = `${second.getUserId()} joining ${roomId}`;
    await second.joinRoom(roomId);
    say(`${second.getUserId()} joined ${roomId}`);
  } else {
    step = `both clients seeing ${roomId}`;
    await eventually(() => clients.every((c) => c.getRoom(roomId)?.getMyMembership() === "join"), timeout, step);
    if (!first.getRoom(roomId).hasEncryptionStateEvent()) {
      step = `${first.getUserId()} turning encryption on in ${roomId}`;
      await first.sendStateEvent(roomId, "m.room.encryption", { algorithm: MEGOLM }, "");
      say(`${first.getUserId()} turned encryption on in ${roomId}`);
    }
  }

  for (const [me, other] of [
    [first, second],
    [second, first],
  ]) {
    step = `${me.getUserId()} seeing ${other.getUserId()} joined and ${roomId} encrypted`;
    await eventually(
      async () =>
        me.getRoom(roomId)?.getMember(other.getUserId())?.membership === "join" &&
        (await me.getCrypto().isEncryptionEnabledInRoom(roomId)),
      timeout,
      step,
    );
    step = `${me.getUserId()}'s client listing ${other.getUserId()}'s device ${other.getDeviceId()}`;
    await eventually(
      async () => {
        const devices = await me.getCrypto().getUserDeviceInfo([other.getUserId()], true);
        return devices.get(other.getUserId())?.has(other.getDeviceId());
      },
      timeout,
      step,
    );
    say(`${me.getUserId()} sees ${other.getUserId()}'s device ${other.getDeviceId()}`);
  }

  const nonce = randomUUID();
  for (const [sender, receiver, text] of [
    [first, second, `hello from ${first.getUserId()}, ${nonce}`],
    [second, first, `and back from ${second.getUserId()}, ${nonce}`],
  ]) {
    step = `${sender.getUserId()} sending an encrypted message`;
    const { event_id: eventId } = await sender.sendTextMessage(roomId, text);
    step = `${receiver.getUserId()} decrypting ${eventId} from ${sender.getUserId()}`;
    const event = await waitForDecrypted(receiver, roomId, eventId, timeout);
    const body = event.getContent().body;
    if (body !== text) throw new Error(`${step}: decrypted ${JSON.stringify(body)}, sent ${JSON.stringify(text)}`);
    if (event.getWireType() !== "m.room.encrypted" || event.getWireContent().algorithm !== MEGOLM) {
      throw new Error(`${step}: the event was not megolm-encrypted on the wire: ${JSON.stringify(event.getWireContent())}`);
    }
    say(`${receiver.getUserId()} decrypted ${eventId}: ${JSON.stringify(body)}`);
  }

  // A second device of each side with a password, signed in while the other side's
  // client already tracks its user: that client must learn of it through a device list
  // change, and its next message must reach both devices, as must a to-device message
  // to all of them; once the second device signs out, the other side drops it.
  for (const [index, me] of [first, second].entries()) {
    const other = [first, second][1 - index];
    const account = config.accounts[index];
    if (!account.password) continue;
    step = `${me.getUserId()} signing in a second device`;
    const extra = await login(account.base_url, account.user_id, account.password, "e2ee chat driver, second device");
    extraDevices.push(extra);
    await startWithCrypto(extra, timeout);
    step = `${other.getUserId()}'s client listing ${me.getUserId()}'s new device ${extra.getDeviceId()}`;
    await eventually(
      async () => (await other.getCrypto().getUserDeviceInfo([me.getUserId()])).get(me.getUserId())?.has(extra.getDeviceId()),
      timeout,
      step,
    );
    say(`${other.getUserId()} sees ${me.getUserId()}'s new device ${extra.getDeviceId()}`);
    step = `${me.getUserId()}'s second device seeing ${roomId}`;
    await eventually(() => extra.getRoom(roomId)?.getMyMembership() === "join", timeout, step);
    const text = `to every device of ${me.getUserId()}, ${nonce}`;
    step = `${other.getUserId()} sending an encrypted message to both of ${me.getUserId()}'s devices`;
    const { event_id: eventId } = await other.sendTextMessage(roomId, text);
    for (const device of [me, extra]) {
      step = `${me.getUserId()}'s device ${device.getDeviceId()} decrypting ${eventId}`;
      const body = (await waitForDecrypted(device, roomId, eventId, timeout)).getContent().body;
      if (body !== text) throw new Error(`decrypted ${JSON.stringify(body)}, sent ${JSON.stringify(text)}`);
    }
    say(`${me.getUserId()} decrypted ${eventId} on devices ${me.getDeviceId()} and ${extra.getDeviceId()}`);

    // A plain to-device message for every device of the user ("*"), which the user's
    // server expands.
    const pings = [];
    for (const device of [me, extra]) {
      device.on(sdk.ClientEvent.ToDeviceEvent, (event) => {
        if (event.getType() === PING && event.getContent().nonce === nonce) pings.push(device.getDeviceId());
      });
    }
    step = `${other.getUserId()} sending a to-device message to every device of ${me.getUserId()}`;
    await other.sendToDevice(PING, new Map([[me.getUserId(), new Map([["*", { nonce }]])]]));
    step = `both of ${me.getUserId()}'s devices receiving the to-device message`;
    await eventually(() => pings.length >= 2, timeout, step);
    if (pings.sort().join() !== [me.getDeviceId(), extra.getDeviceId()].sort().join()) {
      throw new Error(`received by ${JSON.stringify(pings)}`);
    }
    say(`${me.getUserId()}'s devices ${me.getDeviceId()} and ${extra.getDeviceId()} received the to-device message`);

    // The second device signs out; the other side's client must stop listing it.
    step = `${other.getUserId()}'s client dropping ${me.getUserId()}'s signed-out device ${extra.getDeviceId()}`;
    extra.stopClient();
    await extra.logout(true);
    await eventually(
      async () => !(await other.getCrypto().getUserDeviceInfo([me.getUserId()])).get(me.getUserId())?.has(extra.getDeviceId()),
      timeout,
      step,
    );
    say(`${other.getUserId()} no longer lists ${me.getUserId()}'s signed-out device ${extra.getDeviceId()}`);
  }

  // Cross-signing: each side with a password makes new cross-signing keys (UIA answered
  // with the password when the server asks), and the other side's client must see the
  // device signed by its owner's new self-signing key.
  for (const [index, me] of [first, second].entries()) {
    const other = [first, second][1 - index];
    const password = config.accounts[index].password;
    if (!password) continue;
    step = `${me.getUserId()} bootstrapping cross-signing`;
    await me.getCrypto().bootstrapCrossSigning({
      setupNewCrossSigning: true,
      authUploadDeviceSigningKeys: async (makeRequest) => {
        try {
          return await makeRequest(null);
        } catch (error) {
          if (error.httpStatus !== 401 || !error.data?.session) throw error;
          return await makeRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: me.getUserId() },
            password,
            session: error.data.session,
          });
        }
      },
    });
    const master = await me.getCrypto().getCrossSigningKeyId();
    say(`${me.getUserId()} has the cross-signing master key ${master}`);
    step = `${other.getUserId()} seeing ${me.getUserId()}'s device ${me.getDeviceId()} signed by its owner`;
    await eventually(
      async () => (await other.getCrypto().getDeviceVerificationStatus(me.getUserId(), me.getDeviceId()))?.signedByOwner,
      timeout,
      step,
    );
    say(`${other.getUserId()} sees ${me.getUserId()}'s device ${me.getDeviceId()} cross-signed`);
  }
}

let failure;
try {
  await main();
} catch (error) {
  failure = error;
}
for (const client of [...clients, ...extraDevices]) client.stopClient();
if (failure) {
  const message = String(failure.message ?? failure);
  say(message.includes(step) ? `FAILED: ${message}` : `FAILED: ${step}: ${message}`);
  process.exit(1);
}
say("ok");
process.exit(0);
