// Where group calls find their media service (MSC4143): the LiveKit JWT services of the
// configuration, in /.well-known/matrix/client (what Element Call reads) and from the
// transports endpoint; none when none are configured. And the OpenID token such a
// service checks with this server comes from matrix-js-sdk's usual call.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, register } from "./harness.js";

const TRANSPORTS = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports";

test("group call transports are announced where clients look for them", async (t) => {
  const server = await startServer(`
[global.rtc]
livekit_service_urls = ["https://livekit-jwt.example.org"]
`);
  const bare = await startServer();
  t.after(async () => {
    await server.stop();
    await bare.stop();
  });
  const livekit = [{ type: "livekit", livekit_service_url: "https://livekit-jwt.example.org" }];

  const wellKnown = await (await fetch(`${server.baseUrl}/.well-known/matrix/client`)).json();
  assert.deepEqual(wellKnown["org.matrix.msc4143.rtc_foci"], livekit);
  assert.ok(wellKnown["m.homeserver"].base_url);
  const alice = await register(server, "alice");
  const answer = await alice.http.authedRequest("GET", TRANSPORTS, undefined, undefined, { prefix: "" });
  assert.deepEqual(answer, { rtc_transports: livekit });
  const openid = await alice.getOpenIdToken();
  assert.ok(openid.access_token && openid.matrix_server_name === "localhost", JSON.stringify(openid));

  const plain = await (await fetch(`${bare.baseUrl}/.well-known/matrix/client`)).json();
  assert.equal(plain["org.matrix.msc4143.rtc_foci"], undefined);
  const bob = await register(bare, "bob");
  assert.deepEqual(await bob.http.authedRequest("GET", TRANSPORTS, undefined, undefined, { prefix: "" }), {
    rtc_transports: [],
  });
});
