// Media as Element Web sends and shows it, through matrix-js-sdk: an avatar, an image
// message, downloads and thumbnails through the authenticated endpoints.
import { test } from "node:test";
import assert from "node:assert/strict";
import zlib from "node:zlib";
import { startServer, register, start, eventually } from "./harness.js";

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

// An RGB PNG of width × height with a gradient.
function png(width, height) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x++) {
      rows[row + 1 + x * 3] = (x * 255) / width;
      rows[row + 2 + x * 3] = (y * 255) / height;
      rows[row + 3 + x * 3] = 90;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", zlib.deflateSync(rows)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

// The size a PNG's header gives.
function pngSize(bytes) {
  assert.equal(bytes.subarray(1, 4).toString("ascii"), "PNG");
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
}

async function fetchAuthed(client, url, headers = {}) {
  const response = await fetch(url, { headers: { Authorization: `Bearer ${client.getAccessToken()}`, ...headers } });
  return { status: response.status, headers: response.headers, body: Buffer.from(await response.arrayBuffer()) };
}

test("an avatar and an image message come through byte for byte, with thumbnails", { timeout: 60000 }, async (t) => {
  const server = await startServer();
  const alice = await register(server, "alice");
  const bob = await register(server, "bob");
  t.after(async () => {
    alice.stopClient();
    bob.stopClient();
    await server.stop();
  });

  // The avatar, as Element's settings upload it.
  const avatar = png(128, 128);
  const { content_uri: avatarUri } = await alice.uploadContent(avatar, { name: "me.png", type: "image/png" });
  assert.match(avatarUri, /^mxc:\/\/localhost\//);
  await alice.setAvatarUrl(avatarUri);
  const profile = await bob.getProfileInfo(alice.getUserId());
  assert.equal(profile.avatar_url, avatarUri);
  const avatarUrl = bob.mxcUrlToHttp(avatarUri, 32, 32, "crop", false, true, true);
  assert.match(avatarUrl, /\/_matrix\/client\/v1\/media\/thumbnail\//);
  const avatarThumbnail = await fetchAuthed(bob, avatarUrl);
  assert.equal(avatarThumbnail.status, 200);
  assert.deepEqual(pngSize(avatarThumbnail.body), [32, 32]);

  // An image message, as Element sends one.
  const { room_id: roomId } = await alice.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [bob.getUserId()] });
  await bob.joinRoom(roomId);
  await start(bob);
  const photo = png(800, 600);
  const { content_uri: photoUri } = await alice.uploadContent(photo, { name: "photo.png", type: "image/png" });
  await alice.sendMessage(roomId, {
    msgtype: "m.image",
    body: "photo.png",
    url: photoUri,
    info: { mimetype: "image/png", w: 800, h: 600, size: photo.length },
  });
  const event = await eventually(
    () => bob.getRoom(roomId)?.getLiveTimeline().getEvents().find((e) => e.getContent().msgtype === "m.image"),
    15000,
    "the image message",
  );
  const shown = bob.mxcUrlToHttp(event.getContent().url, undefined, undefined, undefined, false, true, true);
  assert.match(shown, /\/_matrix\/client\/v1\/media\/download\//);
  const downloaded = await fetchAuthed(bob, shown);
  assert.equal(downloaded.status, 200);
  assert.ok(downloaded.body.equals(photo), "the photo came back different");
  assert.equal(downloaded.headers.get("content-type"), "image/png");
  assert.equal(downloaded.headers.get("content-disposition"), 'inline; filename="photo.png"');

  // The timeline's thumbnail, as Element asks for it (scale, 800×600 box).
  const thumbnail = await fetchAuthed(bob, bob.mxcUrlToHttp(photoUri, 320, 240, "scale", false, true, true));
  assert.equal(thumbnail.status, 200);
  assert.deepEqual(pngSize(thumbnail.body), [320, 240]);

  // A range, as a browser's media element asks.
  const part = await fetchAuthed(bob, shown, { Range: "bytes=0-99" });
  assert.equal(part.status, 206);
  assert.ok(part.body.equals(photo.subarray(0, 100)));

  // No token: 401; unknown media: 404.
  const anonymous = await fetch(shown);
  assert.equal(anonymous.status, 401);
  const unknown = await fetchAuthed(bob, bob.mxcUrlToHttp("mxc://localhost/unknown", undefined, undefined, undefined, false, true, true));
  assert.equal(unknown.status, 404);
  assert.equal(JSON.parse(unknown.body.toString()).errcode, "M_NOT_FOUND");
});
