// Starts the real palisade binary on a free port with a fresh database, and makes
// matrix-js-sdk clients against it.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, readFileSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as sdk from "matrix-js-sdk";

const binary =
  process.env.PALISADE_BIN ??
  resolve(process.env.CARGO_TARGET_DIR ?? join(process.env.HOME, ".cache/palisade-target"), "debug/palisade");

async function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

export async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), "palisade-js-"));
  const port = await freePort();
  writeFileSync(
    join(dir, "homeserver.toml"),
    `[global]
server_name = "localhost"
port = ${port}
database_path = "${join(dir, "db")}"
allow_registration = true

[global.rate_limits.login]
per_second = 1000.0
burst = 10000

[global.rate_limits.registration]
per_second = 1000.0
burst = 10000

[global.rate_limits.message]
per_second = 100000.0
burst = 100000
`,
  );
  const log = openSync(join(dir, "server.log"), "a");
  const child = spawn(binary, ["--config", join(dir, "homeserver.toml")], {
    stdio: ["ignore", log, log],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      const response = await fetch(`${baseUrl}/_matrix/client/versions`);
      if (response.ok) break;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null) throw new Error(readFileSync(join(dir, "server.log"), "utf8"));
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    baseUrl,
    async stop() {
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Registers a user through the spec's UIA flow and returns a logged-in client. */
export async function register(server, username) {
  const anonymous = sdk.createClient({ baseUrl: server.baseUrl });
  const password = `${username}-correct-horse`;
  let session;
  try {
    await anonymous.registerRequest({ username, password });
    throw new Error("registration succeeded without UIA");
  } catch (error) {
    session = error.data?.session;
    if (!session) throw error;
  }
  const response = await anonymous.registerRequest({
    username,
    password,
    auth: { type: "m.login.dummy", session },
  });
  return sdk.createClient({
    baseUrl: server.baseUrl,
    accessToken: response.access_token,
    userId: response.user_id,
    deviceId: response.device_id,
  });
}

/** Starts a client's sync loop and waits until it is live. */
export async function start(client) {
  const ready = new Promise((done) => {
    client.on(sdk.ClientEvent.Sync, (state) => {
      if (state === "PREPARED" || state === "SYNCING") done();
    });
  });
  // Detached pending events keep the live timeline in the server's order.
  await client.startClient({ initialSyncLimit: 20, pendingEventOrdering: sdk.PendingEventOrdering.Detached });
  await ready;
}

/** Waits until `check()` is truthy, polling briefly; fails after `ms`. */
export async function eventually(check, ms = 10000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export { sdk };
