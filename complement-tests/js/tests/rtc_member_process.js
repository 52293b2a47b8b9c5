// A call member in a process of its own, so a test can kill it as an app dies: joins
// the MatrixRTC session of a room as Element Call does (the new membership manager,
// with a delayed leave event kept back by restarts), prints "joined", and stays.
import * as sdk from "matrix-js-sdk";

const { BASE_URL, ACCESS_TOKEN, USER_ID, DEVICE_ID, ROOM_ID, LIVEKIT_URL } = process.env;
const client = sdk.createClient({ baseUrl: BASE_URL, accessToken: ACCESS_TOKEN, userId: USER_ID, deviceId: DEVICE_ID });
await client.startClient({ initialSyncLimit: 1 });
let room;
while (!(room = client.getRoom(ROOM_ID))) await new Promise((wake) => setTimeout(wake, 50));
const session = client.matrixRTC.getRoomSession(room);
const focus = { type: "livekit", livekit_service_url: LIVEKIT_URL };
session.joinRoomSession([focus], { type: "livekit", focus_selection: "oldest_membership" }, {
  useNewMembershipManager: true,
  membershipServerSideExpiryTimeout: 3000,
  membershipKeepAlivePeriod: 1000,
});
while (!session.memberships.some((m) => m.sender === USER_ID && m.deviceId === DEVICE_ID)) {
  await new Promise((wake) => setTimeout(wake, 50));
}
process.stdout.write("joined\n");
