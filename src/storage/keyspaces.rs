//! The catalogue of keyspaces (RocksDB column families). Each is declared here once, with
//! the layout of its keys and values; `docs/architecture.md` repeats this table.
//!
//! Notation: `a ‖ b` is the concatenation of key parts built by [`super::codec::Key`];
//! strings end with `0xFF`, integers are 8 big-endian bytes.

macro_rules! keyspaces {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A keyspace of the database.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Keyspace {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Keyspace {
            /// Every keyspace, in declaration order.
            pub const ALL: &'static [Keyspace] = &[$(Keyspace::$variant,)*];

            /// The column family name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Keyspace::$variant => $name,)*
                }
            }
        }
    };
}

keyspaces! {
    /// Raw byte keys: `schema_version` → u64, `stream_position` → u64 (highest position
    /// ever handed out and written), `state_group_counter` → u64, `signing_key` → JSON
    /// `{version, pkcs8}`, `relations_indexed` → empty (the relations of events written
    /// before relations were indexed have been indexed), `identity_pepper` → the pepper
    /// of contact discovery's hashes.
    Meta => "meta",
    /// `user_id` → JSON `UserRecord` (password hash, creation time, deactivated, admin).
    Users => "users",
    /// `user_id ‖ field` → JSON value of a profile field (`displayname`, `avatar_url`, …).
    Profiles => "profiles",
    /// `user_id ‖ device_id` → JSON `DeviceRecord` (display name, token hashes, last seen).
    Devices => "devices",
    /// `sha256(access token)` → JSON `TokenRecord` (user, device, expiry).
    AccessTokens => "access_tokens",
    /// `sha256(refresh token)` → JSON `TokenRecord`.
    RefreshTokens => "refresh_tokens",
    /// `sha256(login token)` → JSON `TokenRecord` (single use, short expiry).
    LoginTokens => "login_tokens",
    /// `sha256(OpenID token)` → JSON `TokenRecord`: vouches for the user to a third party
    /// (through `/openid/userinfo`) until it expires.
    OpenIdTokens => "openid_tokens",
    /// `user_id ‖ room_id or "" ‖ event type` → JSON `{position, content}`.
    AccountData => "account_data",
    /// `user_id ‖ position` → JSON `{room_id or "", type}`: the account-data change stream.
    AccountDataStream => "account_data_stream",
    /// `user_id ‖ filter_id` → filter JSON.
    Filters => "filters",
    /// `user_id ‖ app_id ‖ pushkey` → pusher JSON.
    Pushers => "pushers",
    /// `user_id ‖ device_id ‖ txn_id` → event id answered for that transaction.
    TxnIds => "txn_ids",
    /// `room_id` → JSON `RoomRecord` (version, state group, forward extremities, depth,
    /// creator, last position).
    Rooms => "rooms",
    /// `event_id` → JSON `StoredPdu` (the PDU as canonical JSON plus its room, stream
    /// position, state group after it, redaction).
    Pdus => "pdus",
    /// `room_id ‖ position` → event id: a room's timeline in stream order.
    Timeline => "timeline",
    /// `room_id ‖ seq` → event id: a room's history from before this server joined,
    /// fetched from other servers on demand, newest first (seq 1 is the event just
    /// before the oldest one of the timeline).
    History => "history",
    /// `room_id` → JSON `HistoryFrontier`: where fetching a room's history goes on.
    HistoryFrontiers => "history_frontiers",
    /// `state_group` → JSON `StateGroup` (parent group and the state entries it changes).
    StateGroups => "state_groups",
    /// `user_id ‖ room_id` → JSON `Membership` (current membership, event id, position).
    UserRooms => "user_rooms",
    /// `user_id ‖ position` → room id: the stream of a user's membership changes.
    UserRoomsStream => "user_rooms_stream",
    /// `room_id ‖ user_id` → membership string: the current members of a room.
    RoomMembers => "room_members",
    /// `room_id ‖ receipt type ‖ thread id or "" ‖ user_id` → JSON `{event_id, ts, position}`.
    Receipts => "receipts",
    /// `user_id ‖ room_id ‖ receipt type ‖ thread root` → JSON `{event_id, ts, position}`:
    /// a user's receipts in threads (not `main`), for their unread counts.
    ThreadReceipts => "thread_receipts",
    /// `user_id ‖ room_id ‖ thread root` → JSON `Stored` (subscribed manually or
    /// automatically, or unsubscribed, with the stream position of the change): the
    /// threads a user follows (MSC4306).
    ThreadSubscriptions => "thread_subscriptions",
    /// `user_id ‖ position` → JSON `{room_id, root}`: the stream of a user's thread
    /// subscription changes, the latest per thread only (MSC4308).
    ThreadSubscriptionChanges => "thread_subscription_changes",
    /// `room_id ‖ thread root ‖ user_id` → empty: who is subscribed to a thread, for
    /// the push rules of a message in it.
    ThreadSubscribers => "thread_subscribers",
    /// `room_id ‖ position` → JSON receipt content (`{event_id: {type: {user: {ts}}}}`).
    ReceiptStream => "receipt_stream",
    /// `room alias` → JSON `{room_id, creator}`.
    Aliases => "aliases",
    /// `room_id ‖ room alias` → empty: the aliases pointing at a room.
    RoomAliases => "room_aliases",
    /// `room_id` → empty: rooms published in the room directory.
    PublicRooms => "public_rooms",
    /// `server_name ‖ key_id` → JSON `{key, valid_until}`: other servers' verify keys
    /// (old keys valid until their `expired_ts`).
    ServerKeys => "server_keys",
    /// `server_name` → the server's latest key document as it signed it (served again
    /// to notary queries).
    ServerKeyDocuments => "server_key_documents",
    /// `destination ‖ sequence` → JSON `Outgoing` (a PDU's event id or an EDU): what is
    /// still to be sent to each server, in order.
    OutgoingQueue => "outgoing_queue",
    /// `user_id ‖ room_id` → JSON list of stripped state events: what an invite from
    /// another server into a room this server is not in showed of the room.
    InviteStates => "invite_states",
    /// `user_id` → JSON `PresenceRecord` (presence, status message, last active).
    Presence => "presence",
    /// `position` → user id: the stream of presence changes.
    PresenceStream => "presence_stream",
    /// `origin ‖ txn_id` → empty: transactions already received from other servers.
    FederationTxns => "federation_txns",
    /// `user_id ‖ room_id` → empty: the rooms each user, of any server, is joined to (the
    /// reverse of `room_members` for joins).
    JoinedRooms => "joined_rooms",
    /// `room_id ‖ position` → user id: the stream of a room's membership changes (who
    /// joined or left when), for the device-list part of sync.
    RoomMembersStream => "room_members_stream",
    /// `user_id ‖ device_id` → the device's identity keys as the client signed them.
    DeviceKeys => "device_keys",
    /// `user_id ‖ device_id ‖ algorithm ‖ upload order ‖ key_id` → a one-time key, until
    /// claimed (oldest upload first).
    OneTimeKeys => "one_time_keys",
    /// `user_id ‖ device_id ‖ algorithm` → JSON `FallbackKey` (key id, key, used).
    FallbackKeys => "fallback_keys",
    /// `user_id ‖ usage` (`master`, `self_signing`, `user_signing`) → the cross-signing
    /// key as signed (signatures uploaded later merged in).
    CrossSigningKeys => "cross_signing_keys",
    /// `signer ‖ target user` → signatures of the signer's user-signing key on the
    /// target's master key: shown to the signer only.
    UserSignatures => "user_signatures",
    /// `position` → user id: the stream of device-list changes (this server's users and
    /// other servers' users whose updates arrived).
    DeviceListStream => "device_list_stream",
    /// `user_id` → u64: a local user's latest device-list stream id (the `stream_id` of
    /// `m.device_list_update` and `/user/devices`).
    DeviceListVersions => "device_list_versions",
    /// `user_id` → JSON `RemoteDevices`: another server's user's devices and
    /// cross-signing keys, kept while a room is shared and dropped on an update.
    RemoteDevices => "remote_devices",
    /// `user_id ‖ version` → JSON `BackupVersion` (algorithm, auth data, count, etag;
    /// deleted versions stay as tombstones).
    BackupVersions => "backup_versions",
    /// `user_id ‖ version ‖ room_id ‖ session_id` → the backed-up session key data.
    BackupKeys => "backup_keys",
    /// `user_id ‖ device_id ‖ position` → to-device event JSON, until the device syncs
    /// past it.
    ToDevice => "to_device",
    /// `received at (ms) ‖ random id` → JSON `Report`: content reported to this server's
    /// administrators (an event, a room or a user, with the reporter and reason).
    Reports => "reports",
    /// `server_name ‖ media_id` → JSON `MediaRecord`: an `mxc://` URI of this server or
    /// one fetched from another (the SHA-256 of its file, size, type, file name,
    /// uploader; no hash while an asynchronous upload is awaited).
    Media => "media",
    /// `sha256 ‖ owner` → empty: who uses a media file (an `mxc://` URI, or one of its
    /// thumbnails); the file goes when the last owner does.
    MediaRefs => "media_refs",
    /// `server_name ‖ media_id ‖ thumbnail spec` → JSON `ThumbnailRecord` (its file,
    /// size, type, dimensions): thumbnails made (or fetched) so far.
    MediaThumbnails => "media_thumbnails",
    /// `user_id ‖ created (ms) ‖ media_id` → u64 size: a local user's uploads (quota,
    /// the admin API).
    MediaByUser => "media_by_user",
    /// `user_id ‖ media_id` → u64 expiry (ms): `mxc://` URIs created and still awaiting
    /// their upload.
    MediaPending => "media_pending",
    /// `user_id ‖ device_id ‖ conn_id ‖ ""` → JSON `ConnectionHeader` (the position the
    /// client holds, stream positions, list counts, last use); `user_id ‖ device_id ‖
    /// conn_id ‖ room_id` → JSON `SentRoom`: what a sliding sync connection has been sent.
    SlidingSync => "sliding_sync",
    /// `room_id ‖ parent event id ‖ position` → JSON `Relation` (the child's event id,
    /// relation type, event type and sender): the events relating to an event, in stream
    /// order.
    Relations => "relations",
    /// `event_id` → JSON `Aggregation`: what clients see bundled with an event that
    /// others relate to (its latest edit, whether it has references, whether it is a
    /// thread root).
    Aggregations => "aggregations",
    /// `room_id ‖ root event id` → JSON `Thread` (reply count, latest reply and its
    /// position, participants).
    Threads => "threads",
    /// `room_id ‖ position of the latest reply` → root event id: a room's threads by
    /// latest activity.
    ThreadActivity => "thread_activity",
    /// `room_id ‖ position` → JSON `NotifyingEvent`: the push actions of an event that
    /// notifies local members, computed once when it was written: its distinct actions,
    /// what every local member joined before it gets, and the members (or invitee) who
    /// get something else. Unread counts and `/notifications` read it.
    NotifyingEvents => "room_notifications",
    /// `user_id ‖ position` → a run (`storage::runs`) of entries, each a room id: the
    /// notifications a user with a pusher has, for the push gateways to send.
    PushQueue => "push_queue",
    /// `user_id ‖ app_id ‖ pushkey` → JSON `PusherCursor` (the device that set the pusher,
    /// the position up to which notifications were sent, failures): a push gateway's
    /// delivery state.
    PusherCursors => "pusher_cursors",
    /// `position` → JSON `{"index": event id}` or `{"forget": event id}`: the search
    /// index's work, written with the event and removed once the index has taken it.
    SearchQueue => "search_queue",
    /// `appservice_id ‖ position` → a run (`storage::runs`) of entries, each an event id
    /// or the JSON of an ephemeral event or a to-device message: what an application
    /// service is to be sent, staged with what it records.
    AppserviceQueue => "appservice_queue",
    /// `appservice_id` → JSON `Delivery` (the position sent through, the next
    /// transaction id, the transaction in flight): an application service's delivery
    /// state.
    AppserviceDelivery => "appservice_delivery",
    /// `appservice_id ‖ network_id ‖ room_id` → empty: the rooms an application service
    /// lists in the room directory under one of its networks (third-party instance
    /// `appservice_id|network_id`).
    AppserviceRoomLists => "appservice_room_lists",
    /// `appservice_id` → the registration's YAML: the application services registered
    /// at run time through the admin API.
    AppserviceRegistrations => "appservice_registrations",
    /// `delay_id` → JSON `Delayed` (user, room, type, state key, content, delay, running
    /// since): an event the server is to send later (MSC4140).
    DelayedEvents => "delayed_events",
    /// `sid` → JSON `Session` (address, purpose, hashes of the client secret and of the
    /// code, attempts left, when verified): a phone number or email verification.
    ThreepidSessions => "threepid_sessions",
    /// `sha256(client secret) ‖ purpose ‖ medium ‖ address` → sid: the session a retried
    /// code request continues.
    ThreepidSessionIndex => "threepid_session_index",
    /// `medium ‖ address` → JSON `Bound` (user, added, verified, discoverable): the
    /// account an address is on.
    ThreepidOwners => "threepid_owners",
    /// `user_id ‖ medium ‖ address` → JSON `Address`: the addresses on an account.
    UserThreepids => "user_threepids",
    /// contact discovery's lookup hash of an address → JSON `Address`.
    ThreepidHashes => "threepid_hashes",
    /// `sha256(token)` → JSON `IdentityToken` (user, created): the identity service's
    /// access tokens.
    IdentityTokens => "identity_tokens",
    /// `user_id` → JSON list of the terms URLs the user accepted for the identity service.
    IdentityTerms => "identity_terms",
    /// `room_id` → empty: the rooms that set a retention policy (`m.room.retention`).
    RetentionRooms => "retention_rooms",
    /// `room_id` → u64: the timeline position up to which the room's messages are
    /// expired or still alive but looked at.
    RetentionCursors => "retention_cursors",
}
