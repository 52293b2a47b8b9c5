// Starts the real palisade binary on a free port with a fresh database, and makes
// matrix-js-sdk clients against it.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
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

/** `extra` is TOML added to the `[global]` table (say `allow_guest_access = true`). */
export async function startServer(extra = "") {
  // For checking the tests themselves against another homeserver (say Synapse) that
  // allows open registration: users then get a random suffix.
  if (process.env.JS_TEST_HOMESERVER) {
    return { baseUrl: process.env.JS_TEST_HOMESERVER, suffix: `-${randomUUID().slice(0, 8)}`, async stop() {} };
  }
  const dir = mkdtempSync(join(tmpdir(), "palisade-js-"));
  const port = await freePort();
  writeFileSync(
    join(dir, "homeserver.toml"),
    `[global]
server_name = "localhost"
port = ${port}
database_path = "${join(dir, "db")}"
allow_registration = true
${extra}

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
    logPath: join(dir, "server.log"),
    async stop() {
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Registers a user through the spec's UIA flow and returns a logged-in client. */
export async function register(server, name) {
  const anonymous = sdk.createClient({ baseUrl: server.baseUrl });
  const username = `${name}${server.suffix ?? ""}`;
  const password = passwordOf(name);
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

/** Logs in as an existing user on a new device and returns the client (not started). */
export async function login(baseUrl, userId, password, deviceName = "palisade test device") {
  const anonymous = sdk.createClient({ baseUrl });
  const response = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: userId },
    password,
    initial_device_display_name: deviceName,
  });
  return sdk.createClient({
    baseUrl,
    accessToken: response.access_token,
    userId: response.user_id,
    deviceId: response.device_id,
  });
}

/** The password `register` gives the user it registers as `name`. */
export function passwordOf(name) {
  return `${name}-correct-horse`;
}

/**
 * Silences the SDK's debug, info and plain logs (the Rust crypto stack's are many) unless
 * the environment variable JS_TEST_VERBOSE is set; warnings and errors still show.
 */
export function quietSdkLogs() {
  if (!process.env.JS_TEST_VERBOSE) console.log = console.info = console.debug = () => {};
}

/**
 * Gives a client the Rust crypto stack (as Element Web has it) with an in-memory store,
 * then starts its sync loop; waits until the server lists the device's identity keys.
 */
export async function startWithCrypto(client, ms = 20000) {
  await client.initRustCrypto({ useIndexedDB: false });
  await start(client);
  const own = await client.getCrypto().getOwnDeviceKeys();
  await eventually(
    async () => {
      const keys = await client.downloadKeysForUsers([client.getUserId()]);
      const device = keys.device_keys?.[client.getUserId()]?.[client.getDeviceId()];
      return device?.keys?.[`curve25519:${client.getDeviceId()}`] === own.curve25519;
    },
    ms,
    `the keys of ${client.getUserId()}'s device ${client.getDeviceId()} on the server`,
  );
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

/**
 * Waits until `client` has decrypted the event `eventId` of the room; fails with the
 * last thing seen (the event missing, not decrypted yet, or why decryption failed).
 */
export async function waitForDecrypted(client, roomId, eventId, ms = 20000) {
  let last = "the event never arrived";
  try {
    return await eventually(
      () => {
        const event = client.getRoom(roomId)?.findEventById(eventId);
        if (!event) return null;
        if (event.isDecryptionFailure()) {
          last = `decryption failed: ${event.decryptionFailureReason} (${event.getContent().body})`;
          return null;
        }
        if (event.isBeingDecrypted() || event.getType() === "m.room.encrypted") {
          last = "the event arrived but is not decrypted yet";
          return null;
        }
        return event;
      },
      ms,
      "the decryption",
    );
  } catch {
    throw new Error(`${last} (after ${ms} ms)`);
  }
}

export { sdk };
