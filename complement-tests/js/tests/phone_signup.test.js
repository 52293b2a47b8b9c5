// Phone numbers and email addresses: sign-up with a code texted through the webhook
// driver (a local "SMS provider" receives it), the spec's errors for wrong, expired and
// too many codes, login by phone, password reset by phone, an email added with the code
// from the log driver, and contact discovery through the identity API the server serves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { readFileSync } from "node:fs";
import * as sdk from "matrix-js-sdk";
import { startServer } from "./harness.js";

/** A fake SMS provider: records every message posted to it. */
async function smsProvider() {
  const messages = [];
  const waiting = [];
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const message = { headers: request.headers, body: JSON.parse(body) };
      messages.push(message);
      waiting.splice(0).forEach((wake) => wake());
      response.writeHead(200, { "content-type": "application/json" });
      response.end("{}");
    });
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${server.address().port}/sms`,
    messages,
    /** The code of the next message to `to`, after `seen` messages. */
    async codeFor(to, seen) {
      for (let i = 0; i < 100; i++) {
        const message = messages.slice(seen).find((m) => m.body.to === to);
        if (message) return message.body.message.match(/\d{6}/)[0];
        await new Promise((wake) => {
          waiting.push(wake);
          setTimeout(wake, 100);
        });
      }
      throw new Error(`no SMS to ${to}`);
    },
    close: () => new Promise((done) => server.close(done)),
  };
}

/** The code the log driver wrote for `to`, the newest. */
async function codeFromLog(logPath, to) {
  for (let i = 0; i < 100; i++) {
    const lines = readFileSync(logPath, "utf8").split("\n").filter((line) => line.includes(to));
    const line = lines.at(-1);
    const code = line?.match(/code[=:]\s*"?(\d{6})/);
    if (code) return code[1];
    await new Promise((wake) => setTimeout(wake, 50));
  }
  throw new Error(`no code for ${to} in the log`);
}

async function rejects(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("the request succeeded");
}

const secret = () => `secret${Math.random().toString(36).slice(2)}`;

/** Registers with a verified phone number; returns the registration's answer. */
async function registerByPhone(client, sms, username, password, country, number, e164) {
  const clientSecret = secret();
  const seen = sms.messages.length;
  const { sid, submit_url } = await client.requestRegisterMsisdnToken(country, number, clientSecret, 1);
  const code = await sms.codeFor(e164, seen);
  assert.deepEqual(await client.submitMsisdnTokenOtherUrl(submit_url, sid, clientSecret, code), { success: true });
  const flows = await rejects(client.registerRequest({ username, password }));
  return client.registerRequest({
    username,
    password,
    auth: { type: "m.login.msisdn", threepid_creds: { sid, client_secret: clientSecret }, session: flows.data.session },
  });
}

test("sign up, log in and reset a password by phone; add an email; find contacts", async (t) => {
  const sms = await smsProvider();
  const server = await startServer(`
[global.threepids]
code_lifetime_secs = 3

[global.threepids.sms]
driver = "webhook"

[global.threepids.sms.webhook]
url = "${sms.url}"
headers = { "X-Api-Key" = "provider-key" }

[global.threepids.email]
driver = "log"

[global.identity]
enabled = true
terms_url = "https://example.org/identity-terms"

[global.rate_limits.verification_codes_per_ip]
per_second = 10.0
burst = 100
`);
  t.after(async () => {
    await server.stop();
    await sms.close();
  });
  const anonymous = sdk.createClient({ baseUrl: server.baseUrl, idBaseUrl: server.baseUrl });

  // The flows offer the phone stage beside the dummy one.
  const challenge = await rejects(anonymous.registerRequest({ username: "probe", password: "pw" }));
  assert.ok(challenge.data.flows.some((flow) => flow.stages.includes("m.login.msisdn")), JSON.stringify(challenge.data));

  // A code request: the provider gets the number in E.164 and the configured header; a
  // protocol retry (same send_attempt) answers with the same session and texts nothing.
  const clientSecret = secret();
  const first = await anonymous.requestRegisterMsisdnToken("GB", "07400 123001", clientSecret, 1);
  const code = await sms.codeFor("+447400123001", 0);
  assert.equal(sms.messages[0].headers["x-api-key"], "provider-key");
  assert.match(sms.messages[0].body.message, /^Your localhost code is \d{6}$/);
  const retried = await anonymous.requestRegisterMsisdnToken("GB", "07400 123001", clientSecret, 1);
  assert.equal(retried.sid, first.sid);
  await new Promise((wake) => setTimeout(wake, 200));
  assert.equal(sms.messages.length, 1);

  // Signing up before the code is entered is refused; a wrong code is M_TOKEN_INCORRECT.
  const flows = await rejects(anonymous.registerRequest({ username: "alice", password: "alice-pw" }));
  const early = await rejects(
    anonymous.registerRequest({
      username: "alice",
      password: "alice-pw",
      auth: { type: "m.login.msisdn", threepid_creds: { sid: first.sid, client_secret: clientSecret }, session: flows.data.session },
    }),
  );
  assert.equal(early.httpStatus, 401);
  assert.equal(early.data.errcode, "M_THREEPID_AUTH_FAILED");
  const wrongCode = code === "000000" ? "111111" : "000000";
  const wrong = await rejects(anonymous.submitMsisdnTokenOtherUrl(first.submit_url, first.sid, clientSecret, wrongCode));
  assert.equal(wrong.httpStatus, 400);
  assert.equal(wrong.errcode, "M_TOKEN_INCORRECT");
  assert.deepEqual(await anonymous.submitMsisdnTokenOtherUrl(first.submit_url, first.sid, clientSecret, code), { success: true });
  const alice = await anonymous.registerRequest({
    username: "alice",
    password: "alice-pw",
    auth: { type: "m.login.msisdn", threepid_creds: { sid: first.sid, client_secret: clientSecret }, session: flows.data.session },
  });
  assert.equal(alice.user_id, "@alice:localhost");
  const aliceClient = sdk.createClient({ baseUrl: server.baseUrl, idBaseUrl: server.baseUrl, accessToken: alice.access_token, userId: alice.user_id });
  const { threepids } = await aliceClient.getThreePids();
  assert.deepEqual(threepids.map(({ medium, address }) => [medium, address]), [["msisdn", "447400123001"]]);

  // The number is taken now.
  const taken = await rejects(anonymous.requestRegisterMsisdnToken("GB", "+44 7400 123001", secret(), 1));
  assert.equal(taken.errcode, "M_THREEPID_IN_USE");
  // Not a number: M_INVALID_PARAM.
  const invalid = await rejects(anonymous.requestRegisterMsisdnToken("GB", "12", secret(), 1));
  assert.equal(invalid.errcode, "M_INVALID_PARAM");

  // Login by phone (m.id.phone, national format); a number on no account fails as a
  // wrong password does.
  const byPhone = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.phone", country: "GB", phone: "07400123001" },
    password: "alice-pw",
  });
  assert.equal(byPhone.user_id, "@alice:localhost");
  const nobody = await rejects(
    anonymous.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.phone", country: "GB", phone: "07400123999" },
      password: "alice-pw",
    }),
  );
  assert.equal(nobody.errcode, "M_FORBIDDEN");

  // Five wrong codes spend a session: the sixth try is refused even with the right code.
  const spentSecret = secret();
  const seen = sms.messages.length;
  const spent = await anonymous.requestRegisterMsisdnToken("GB", "07400 123002", spentSecret, 1);
  const spentCode = await sms.codeFor("+447400123002", seen);
  const otherCode = spentCode === "000000" ? "111111" : "000000";
  for (let i = 0; i < 5; i++) {
    const error = await rejects(anonymous.submitMsisdnTokenOtherUrl(spent.submit_url, spent.sid, spentSecret, otherCode));
    assert.equal(error.errcode, "M_TOKEN_INCORRECT");
  }
  const sixth = await rejects(anonymous.submitMsisdnTokenOtherUrl(spent.submit_url, spent.sid, spentSecret, spentCode));
  assert.equal(sixth.httpStatus, 429);
  assert.equal(sixth.errcode, "M_LIMIT_EXCEEDED");

  // A code past its lifetime (3 s here) is M_SESSION_EXPIRED; a new send_attempt texts a
  // new code in the same session, which works.
  const lateSecret = secret();
  let before = sms.messages.length;
  const late = await anonymous.requestRegisterMsisdnToken("GB", "07400 123003", lateSecret, 1);
  const lateCode = await sms.codeFor("+447400123003", before);
  await new Promise((wake) => setTimeout(wake, 3500));
  const expired = await rejects(anonymous.submitMsisdnTokenOtherUrl(late.submit_url, late.sid, lateSecret, lateCode));
  assert.equal(expired.httpStatus, 400);
  assert.equal(expired.errcode, "M_SESSION_EXPIRED");
  before = sms.messages.length;
  const again = await anonymous.requestRegisterMsisdnToken("GB", "07400 123003", lateSecret, 2);
  assert.equal(again.sid, late.sid);
  const newCode = await sms.codeFor("+447400123003", before);
  assert.deepEqual(await anonymous.submitMsisdnTokenOtherUrl(again.submit_url, again.sid, lateSecret, newCode), { success: true });

  // Codes to one number are rate limited: three at once, then one a minute.
  const limited = await rejects(anonymous.requestRegisterMsisdnToken("GB", "07400 123003", lateSecret, 3).then(() =>
    anonymous.requestRegisterMsisdnToken("GB", "07400 123003", lateSecret, 4)));
  assert.equal(limited.errcode, "M_LIMIT_EXCEEDED");

  // A forgotten password, reset by phone: every device is logged out.
  const resetSecret = secret();
  before = sms.messages.length;
  const reset = await anonymous.requestPasswordMsisdnToken("GB", "07400123001", resetSecret, 1);
  const resetCode = await sms.codeFor("+447400123001", before);
  await anonymous.submitMsisdnTokenOtherUrl(reset.submit_url, reset.sid, resetSecret, resetCode);
  await anonymous.setPassword({ type: "m.login.msisdn", threepid_creds: { sid: reset.sid, client_secret: resetSecret } }, "alice-new-pw", true);
  const loggedOut = await rejects(aliceClient.whoami());
  assert.equal(loggedOut.errcode, "M_UNKNOWN_TOKEN");
  const unknownNumber = await rejects(anonymous.requestPasswordMsisdnToken("GB", "07400123998", secret(), 1));
  assert.equal(unknownNumber.errcode, "M_THREEPID_NOT_FOUND");
  const relogged = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.phone", country: "GB", phone: "+447400123001" },
    password: "alice-new-pw",
  });
  const alice2 = sdk.createClient({ baseUrl: server.baseUrl, idBaseUrl: server.baseUrl, accessToken: relogged.access_token, userId: relogged.user_id });

  // An email added to the account, with the code the log driver wrote, after the user
  // confirms with their password.
  const emailSecret = secret();
  const emailSession = await alice2.requestAdd3pidEmailToken("Alice@Example.org", emailSecret, 1);
  const emailCode = await codeFromLog(server.logPath, "alice@example.org");
  await alice2.submitMsisdnTokenOtherUrl(emailSession.submit_url, emailSession.sid, emailSecret, emailCode);
  const uia = await rejects(alice2.addThreePidOnly({ sid: emailSession.sid, client_secret: emailSecret }));
  assert.equal(uia.httpStatus, 401);
  await alice2.addThreePidOnly({
    sid: emailSession.sid,
    client_secret: emailSecret,
    auth: { type: "m.login.password", identifier: { type: "m.id.user", user: "alice" }, password: "alice-new-pw", session: uia.data.session },
  });
  const both = (await alice2.getThreePids()).threepids.map(({ medium, address }) => `${medium}:${address}`).sort();
  assert.deepEqual(both, ["email:alice@example.org", "msisdn:447400123001"]);
  const byEmail = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.thirdparty", medium: "email", address: "ALICE@example.org" },
    password: "alice-new-pw",
  });
  assert.equal(byEmail.user_id, "@alice:localhost");

  // Erin signs up with her phone number alone, no password; to set one she confirms who
  // she is with a code texted to that number (the m.login.msisdn stage the server
  // offers beside m.login.password), then logs in with it.
  const erin = await registerByPhone(anonymous, sms, "erin", undefined, "GB", "07400123006", "+447400123006");
  const erinClient = sdk.createClient({ baseUrl: server.baseUrl, accessToken: erin.access_token, userId: erin.user_id });
  const confirm = await rejects(erinClient.setPassword(undefined, "erin-pw", false));
  assert.equal(confirm.httpStatus, 401);
  assert.ok(confirm.data.flows.some((flow) => flow.stages.includes("m.login.msisdn")), JSON.stringify(confirm.data));
  const erinSecret = secret();
  before = sms.messages.length;
  const erinCode = await anonymous.requestPasswordMsisdnToken("GB", "07400123006", erinSecret, 1);
  await anonymous.submitMsisdnTokenOtherUrl(erinCode.submit_url, erinCode.sid, erinSecret, await sms.codeFor("+447400123006", before));
  await erinClient.setPassword(
    { type: "m.login.msisdn", threepid_creds: { sid: erinCode.sid, client_secret: erinSecret }, session: confirm.data.session },
    "erin-pw",
    false,
  );
  const erinLogin = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.phone", country: "GB", phone: "07400123006" },
    password: "erin-pw",
  });
  assert.equal(erinLogin.user_id, "@erin:localhost");

  // Bob signs up by phone too but does not let others find him.
  const bob = await registerByPhone(anonymous, sms, "bob", "bob-pw", "GB", "07400123004", "+447400123004");
  assert.equal(bob.user_id, "@bob:localhost");

  // Alice lets others find her by her addresses.
  await alice2.setAccountData("org.palisade.discovery", { discoverable: true });

  // Carol looks up her address book through the identity API of the server, found in
  // its well-known, with an OpenID token; the terms come first.
  const wellKnown = await (await fetch(`${server.baseUrl}/.well-known/matrix/client`)).json();
  assert.equal(wellKnown["m.identity_server"].base_url, server.baseUrl);
  const carol = await registerByPhone(anonymous, sms, "carol", "carol-pw", "GB", "07400123005", "+447400123005");
  const carolClient = sdk.createClient({ baseUrl: server.baseUrl, idBaseUrl: server.baseUrl, accessToken: carol.access_token, userId: carol.user_id });
  const openId = await carolClient.getOpenIdToken();
  const { token: idToken } = await carolClient.registerWithIdentityServer(openId);
  const unsigned = await rejects(carolClient.getIdentityHashDetails(idToken));
  assert.equal(unsigned.errcode, "M_TERMS_NOT_SIGNED");
  const terms = await carolClient.getTerms(sdk.SERVICE_TYPES.IS, server.baseUrl);
  const urls = Object.values(terms.policies).map((policy) => policy.en.url);
  await carolClient.agreeToTerms(sdk.SERVICE_TYPES.IS, server.baseUrl, idToken, urls);
  const book = [
    ["447400123001", "msisdn"],
    ["alice@example.org", "email"],
    ["447400123004", "msisdn"],
    ["447400123777", "msisdn"],
  ];
  const found = await carolClient.identityHashedLookup(book, idToken);
  assert.deepEqual(
    found.map(({ address, mxid }) => `${address}=${mxid}`).sort(),
    ["447400123001=@alice:localhost", "alice@example.org=@alice:localhost"],
  );

  // A stale pepper is M_INVALID_PEPPER; the `none` algorithm finds the same.
  const stale = await fetch(`${server.baseUrl}/_matrix/identity/v2/lookup`, {
    method: "POST",
    headers: { authorization: `Bearer ${idToken}`, "content-type": "application/json" },
    body: JSON.stringify({ algorithm: "sha256", pepper: "old", addresses: [] }),
  });
  assert.equal(stale.status, 400);
  const staleBody = await stale.json();
  assert.equal(staleBody.errcode, "M_INVALID_PEPPER");
  assert.ok(staleBody.lookup_pepper);
  const clear = await fetch(`${server.baseUrl}/_matrix/identity/v2/lookup`, {
    method: "POST",
    headers: { authorization: `Bearer ${idToken}`, "content-type": "application/json" },
    body: JSON.stringify({ algorithm: "none", pepper: staleBody.lookup_pepper, addresses: ["447400123001 msisdn", "447400123004 msisdn"] }),
  });
  assert.deepEqual((await clear.json()).mappings, { "447400123001 msisdn": "@alice:localhost" });

  // Alice withdraws her phone number from discovery (unbind); then removes her email
  // from her account. Neither is found any more.
  const aliceIs = alice2;
  const unbound = await aliceIs.http.authedRequest("POST", "/account/3pid/unbind", undefined, {
    medium: "msisdn",
    address: "447400123001",
    id_server: new URL(server.baseUrl).host,
  });
  assert.equal(unbound.id_server_unbind_result, "success");
  const deleted = await alice2.deleteThreePid("email", "alice@example.org");
  assert.equal(deleted.id_server_unbind_result, "success");
  assert.deepEqual(await carolClient.identityHashedLookup(book, idToken), []);

  // Bob shares his number for discovery the way Element's settings do: a code through
  // the identity API, then a bind through the homeserver.
  const bobClient = sdk.createClient({ baseUrl: server.baseUrl, idBaseUrl: server.baseUrl, accessToken: bob.access_token, userId: bob.user_id });
  const { token: bobIdToken } = await bobClient.registerWithIdentityServer(await bobClient.getOpenIdToken());
  await bobClient.agreeToTerms(sdk.SERVICE_TYPES.IS, server.baseUrl, bobIdToken, urls);
  const shareSecret = secret();
  before = sms.messages.length;
  const share = await bobClient.requestMsisdnToken("GB", "07400123004", shareSecret, 1, undefined, bobIdToken);
  const shareCode = await sms.codeFor("+447400123004", before);
  await bobClient.submitMsisdnToken(share.sid, shareSecret, shareCode, bobIdToken);
  await bobClient.bindThreePid({ sid: share.sid, client_secret: shareSecret, id_server: new URL(server.baseUrl).host, id_access_token: bobIdToken });
  assert.deepEqual(
    (await carolClient.identityHashedLookup(book, idToken)).map(({ mxid }) => mxid),
    ["@bob:localhost"],
  );
});

/** A minimal SMTP server on loopback: keeps every mail's envelope and data. */
async function smtpServer() {
  const mails = [];
  const server = createTcpServer((socket) => {
    let buffer = "";
    let inData = false;
    let mail = { to: [], data: "" };
    socket.write("220 localhost test SMTP\r\n");
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      for (;;) {
        if (inData) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end < 0) return;
          mail.data = buffer.slice(0, end);
          buffer = buffer.slice(end + 5);
          inData = false;
          mails.push(mail);
          mail = { to: [], data: "" };
          socket.write("250 queued\r\n");
          continue;
        }
        const newline = buffer.indexOf("\r\n");
        if (newline < 0) return;
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO" || verb === "HELO") socket.write("250 localhost\r\n");
        else if (verb === "MAIL") {
          mail.from = line;
          socket.write("250 ok\r\n");
        } else if (verb === "RCPT") {
          mail.to.push(line.match(/<(.*)>/)[1]);
          socket.write("250 ok\r\n");
        } else if (verb === "DATA") {
          inData = true;
          socket.write("354 go ahead\r\n");
        } else if (verb === "QUIT") {
          socket.end("221 bye\r\n");
          return;
        } else socket.write("250 ok\r\n");
      }
    });
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return {
    port: server.address().port,
    mails,
    async mailTo(address) {
      for (let i = 0; i < 100; i++) {
        const mail = mails.find((m) => m.to.includes(address));
        if (mail) return mail;
        await new Promise((wake) => setTimeout(wake, 100));
      }
      throw new Error(`no mail to ${address}`);
    },
    close: () => new Promise((done) => server.close(done)),
  };
}

test("sign up by email: the code mailed through SMTP, verified by opening its link", async (t) => {
  const smtp = await smtpServer();
  const server = await startServer(`
[global.threepids]
require_for_registration = true

[global.threepids.email]
driver = "smtp"
smtp_url = "smtp://127.0.0.1:${smtp.port}"
from = "Test Chat <noreply@localhost.test>"
`);
  t.after(async () => {
    await server.stop();
    await smtp.close();
  });
  const anonymous = sdk.createClient({ baseUrl: server.baseUrl });

  // Only the email stage is offered: an address is required.
  const flows = await rejects(anonymous.registerRequest({ username: "dora", password: "dora-pw" }));
  assert.deepEqual(flows.data.flows.map((flow) => flow.stages), [["m.login.email.identity"]]);
  const dummy = await rejects(
    anonymous.registerRequest({ username: "dora", password: "dora-pw", auth: { type: "m.login.dummy", session: flows.data.session } }),
  );
  assert.equal(dummy.httpStatus, 401);

  const clientSecret = secret();
  const { sid } = await anonymous.requestRegisterEmailToken("Dora@Example.org", clientSecret, 1);
  const mail = await smtp.mailTo("dora@example.org");
  const text = mail.data.replace(/=\r\n/g, "").replace(/=3D/g, "=");
  assert.match(text, /Subject: Your localhost verification code/);
  assert.match(text, /noreply@localhost\.test/);
  const link = text.match(/(http:\/\/\S+submit_token\?\S+)/)[1];
  const opened = await fetch(link);
  assert.equal(opened.status, 200);
  assert.match(await opened.text(), /verified/);

  const dora = await anonymous.registerRequest({
    username: "dora",
    password: "dora-pw",
    auth: { type: "m.login.email.identity", threepid_creds: { sid, client_secret: clientSecret }, session: flows.data.session },
  });
  assert.equal(dora.user_id, "@dora:localhost");
  const doraClient = sdk.createClient({ baseUrl: server.baseUrl, accessToken: dora.access_token, userId: dora.user_id });
  assert.deepEqual((await doraClient.getThreePids()).threepids.map((t) => t.address), ["dora@example.org"]);

  // The same verification cannot make a second account.
  const again = await rejects(anonymous.registerRequest({ username: "dora2", password: "pw" }));
  const reused = await rejects(
    anonymous.registerRequest({
      username: "dora2",
      password: "pw",
      auth: { type: "m.login.email.identity", threepid_creds: { sid, client_secret: clientSecret }, session: again.data.session },
    }),
  );
  assert.equal(reused.httpStatus, 401);
  assert.equal(reused.data.errcode, "M_THREEPID_AUTH_FAILED");
});

test("sign up by phone with the code the log driver wrote", async (t) => {
  const server = await startServer(`
[global.threepids.sms]
driver = "log"
`);
  t.after(() => server.stop());
  const anonymous = sdk.createClient({ baseUrl: server.baseUrl });
  const clientSecret = secret();
  const { sid, submit_url } = await anonymous.requestRegisterMsisdnToken("FR", "06 12 34 56 78", clientSecret, 1);
  const code = await codeFromLog(server.logPath, "+33612345678");
  assert.deepEqual(await anonymous.submitMsisdnTokenOtherUrl(submit_url, sid, clientSecret, code), { success: true });
  const flows = await rejects(anonymous.registerRequest({ username: "fleur", password: "fleur-pw" }));
  const fleur = await anonymous.registerRequest({
    username: "fleur",
    password: "fleur-pw",
    auth: { type: "m.login.msisdn", threepid_creds: { sid, client_secret: clientSecret }, session: flows.data.session },
  });
  assert.equal(fleur.user_id, "@fleur:localhost");
  const login = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.phone", country: "FR", phone: "0612345678" },
    password: "fleur-pw",
  });
  assert.equal(login.user_id, "@fleur:localhost");
  // Email is not configured here: asking for an email code says so.
  const email = await rejects(anonymous.requestRegisterEmailToken("fleur@example.org", secret(), 1));
  assert.equal(email.errcode, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
});
