// A MatrixRTC group call as Element Call runs it on matrix-js-sdk 37.5: a member joins
// (its org.matrix.msc3401.call.member state under a per-device key, with its "left"
// scheduled as a delayed event it keeps restarting); another member's session sees it;
// the first member's app is killed, the restarts stop, and its membership disappears
// when the delay runs out. The member asks for a 3 s delay where the server allows 2 s:
// it reads the server's M_MAX_DELAY_EXCEEDED answer and schedules within it. The
// member's OpenID token checks out at the federation /openid/userinfo, as the LiveKit
// JWT service checks it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { request } from "node:https";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { startServer, register, start, eventually } from "./harness.js";

const CALL_MEMBER = "org.matrix.msc3401.call.member";
const LIVEKIT_URL = "https://livekit-jwt.example.test";

async function freePort() {
  return new Promise((done) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** GET over HTTPS trusting the server's self-signed certificate (a test's federation). */
function getInsecure(url) {
  return new Promise((done, fail) => {
    request(url, { rejectUnauthorized: false, agent: false }, (response) => {
      let body = "";
      response.on("data", (chunk) => (body += chunk));
      response.on("end", () => done({ status: response.statusCode, body: JSON.parse(body) }));
    })
      .on("error", fail)
      .end();
  });
}

test("a call member whose app dies leaves the call when its delayed leave fires", { timeout: 60000 }, async (t) => {
  const federationPort = await freePort();
  const server = await startServer(`
[global.rtc]
livekit_service_urls = ["${LIVEKIT_URL}"]

[global.delayed_events]
max_delay_secs = 2

[global.federation]
enabled = true
address = "127.0.0.1"
port = ${federationPort}
`);
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  let member;
  t.after(async () => {
    member?.kill("SIGKILL");
    bob.stopClient();
    await server.stop();
  });
  const { room_id: roomId } = await alice.createRoom({
    invite: [bob.getUserId()],
    power_level_content_override: { events: { [CALL_MEMBER]: 0 } },
  });
  await bob.joinRoom(roomId);

  // Alice's app joins the call.
  member = spawn(process.execPath, [fileURLToPath(new URL("./rtc_member_process.js", import.meta.url))], {
    env: {
      ...process.env,
      BASE_URL: server.baseUrl,
      ACCESS_TOKEN: alice.getAccessToken(),
      USER_ID: alice.getUserId(),
      DEVICE_ID: alice.getDeviceId(),
      ROOM_ID: roomId,
      LIVEKIT_URL,
    },
    stdio: ["ignore", "pipe", "ignore"],
  });
  await new Promise((joined, fail) => {
    let output = "";
    member.stdout.on("data", (chunk) => {
      output += chunk;
      if (output.includes("joined")) joined();
    });
    member.once("exit", (code) => fail(new Error(`the member exited (${code}) before joining`)));
  });

  // Bob's session sees Alice's device in the call, with the focus she chose.
  await start(bob);
  const room = await eventually(() => bob.getRoom(roomId), 10000, "the room");
  const session = bob.matrixRTC.getRoomSession(room);
  const membership = await eventually(
    () => session.memberships.find((m) => m.sender === alice.getUserId() && m.deviceId === alice.getDeviceId()),
    10000,
    "Alice's call membership",
  );
  assert.equal(membership.getFocusSelection?.() ?? "oldest_membership", "oldest_membership");
  const stateKey = `_${alice.getUserId()}_${alice.getDeviceId()}`;
  const joinedState = await bob.getStateEvent(roomId, CALL_MEMBER, stateKey);
  assert.equal(joinedState.device_id, alice.getDeviceId());
  // Her membership's state key is hers: Bob cannot take her out of the call.
  await assert.rejects(bob.sendStateEvent(roomId, CALL_MEMBER, {}, stateKey), (e) => e.errcode === "M_FORBIDDEN");
  const { delayed_events: waiting } = await alice._unstable_getDelayedEvents();
  const leave = waiting.find((d) => d.type === CALL_MEMBER && d.state_key === stateKey);
  assert.ok(leave, JSON.stringify(waiting));
  assert.equal(leave.delay, 2000);

  // Her membership stays while the app restarts the delayed leave (every second, the
  // delay being 2 s).
  await new Promise((wake) => setTimeout(wake, 4500));
  assert.ok(session.memberships.some((m) => m.sender === alice.getUserId()), "the membership went while the app lived");

  // The LiveKit JWT service's check of her OpenID token.
  const openid = await alice.getOpenIdToken();
  const userinfo = await getInsecure(
    `https://127.0.0.1:${federationPort}/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(openid.access_token)}`,
  );
  assert.deepEqual(userinfo, { status: 200, body: { sub: alice.getUserId() } });

  // The app dies: the server sends the leave when the delay runs out.
  member.kill("SIGKILL");
  const killedAt = Date.now();
  await eventually(
    () => !session.memberships.some((m) => m.sender === alice.getUserId()),
    15000,
    "Alice's membership to go",
  );
  const after = Date.now() - killedAt;
  assert.ok(after >= 1000, `the membership went ${after} ms after the app died, before the delay could run out`);
  const leftState = await bob.getStateEvent(roomId, CALL_MEMBER, stateKey);
  assert.deepEqual(leftState, {});
});
