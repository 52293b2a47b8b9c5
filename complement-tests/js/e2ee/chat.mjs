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
// each account with a password makes new cross-signing keys (answering UIA with the
// password), and the other side must see the signing device signed by them. Every step
// prints one line to stdout; the last line is "ok" (exit 0) or "FAILED: <what>" (exit 1).
// The SDK's own logs go to stderr when E2EE_CHAT_VERBOSE is set, and nowhere otherwise
// (its warnings and errors always go to stderr).
import { randomUUID } from "node:crypto";
import { eventually, login, sdk, startWithCrypto, waitForDecrypted } from "../tests/harness.js";

const MEGOLM = "m.megolm.v1.aes-sha2";

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

  // Cross-signing: each side with a password makes new cross-signing keys (UIA answered
  // with the password when the server asks), and the other side's client must see the
  // device signed by its owner's new self-signing key.
  for (const [index, me] of clients.entries()) {
    const other = clients[1 - index];
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
for (const client of clients) client.stopClient();
if (failure) {
  say(`FAILED: ${step}: ${failure.message ?? failure}`);
  process.exit(1);
}
say("ok");
process.exit(0);
