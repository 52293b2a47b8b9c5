// TURN for calls: the credentials /voip/turnServer hands matrix-js-sdk (the call of
// Element's calls; Node has no WebRTC, so the test asks for them as the SDK does before a
// call) open an allocation on a real coturn configured with the same secret.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, register } from "./harness.js";

async function freePort() {
  return new Promise((done) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** turnutils_uclient's allocation with these credentials: its exit status (0: allocated). */
function allocate(port, username, password) {
  const run = spawnSync(
    "turnutils_uclient",
    ["-p", String(port), "-u", username, "-w", password, "-n", "1", "-m", "1", "-l", "100", "-e", "127.0.0.1", "127.0.0.1"],
    { timeout: 20000, encoding: "utf8" },
  );
  return run.status;
}

test("TURN credentials from /voip/turnServer allocate on coturn; guests and unconfigured servers get none", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-turn-"));
  const turnPort = await freePort();
  const coturn = spawn(
    "turnserver",
    [
      "--listening-ip=127.0.0.1",
      "--relay-ip=127.0.0.1",
      `--listening-port=${turnPort}`,
      "--use-auth-secret",
      "--static-auth-secret=calls-secret",
      "--realm=localhost",
      "--allow-loopback-peers",
      "--no-tls",
      "--no-dtls",
      "--no-cli",
      `--userdb=${join(dir, "turn.sqlite")}`,
      `--pidfile=${join(dir, "turn.pid")}`,
      "--log-file=stdout",
    ],
    { stdio: "ignore" },
  );
  const uri = `turn:127.0.0.1:${turnPort}?transport=udp`;
  const server = await startServer(`allow_guest_access = true

[global.turn]
uris = ["${uri}"]
shared_secret = "calls-secret"
ttl_secs = 600
`);
  const bare = await startServer();
  t.after(async () => {
    coturn.kill("SIGKILL");
    await server.stop();
    await bare.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  await new Promise((r) => setTimeout(r, 500));

  const alice = await register(server, "alice");
  const turn = await alice.turnServer();
  assert.deepEqual(turn.uris, [uri]);
  assert.equal(turn.ttl, 600);
  const [expiry, user] = [turn.username.split(":")[0], turn.username.slice(turn.username.indexOf(":") + 1)];
  assert.equal(user, alice.getUserId());
  const lifetime = Number(expiry) - Date.now() / 1000;
  assert.ok(lifetime > 590 && lifetime <= 601, `valid for ${lifetime} s`);

  assert.equal(allocate(turnPort, turn.username, turn.password), 0, "coturn took the credentials");
  assert.notEqual(allocate(turnPort, turn.username, "not the password"), 0, "coturn checks them");

  // A guest gets none (guests are not given TURN unless configured); nor does anyone on
  // a server with no TURN configured.
  const guest = await fetch(`${server.baseUrl}/_matrix/client/v3/register?kind=guest`, {
    method: "POST",
    body: "{}",
  });
  assert.equal(guest.status, 200);
  const noGuests = await fetch(`${server.baseUrl}/_matrix/client/v3/voip/turnServer`, {
    headers: { Authorization: `Bearer ${(await guest.json()).access_token}` },
  });
  assert.equal(noGuests.status, 403);
  assert.equal((await noGuests.json()).errcode, "M_FORBIDDEN");
  const bob = await register(bare, "bob");
  await assert.rejects(bob.turnServer(), (error) => error.httpStatus === 404 && error.errcode === "M_NOT_FOUND");
});
