//! The deprecated `/v1/` membership endpoints that ruma no longer describes: `send_join`,
//! `send_leave` and `invite`. Their bodies are the PDU itself, and their answers the
//! array `[200, {...}]`. Older servers still call them, and still answer only them.

use serde::{Deserialize, Serialize};

/// A `/v1/` answer: `[200, body]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct V1Answer<T>(pub u16, pub T);

impl<T> V1Answer<T> {
    /// The answer with status 200.
    pub fn ok(body: T) -> Self {
        Self(200, body)
    }
}

/// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`
pub mod send_join {
    use ruma::{
        OwnedEventId, OwnedRoomId,
        api::{federation::authentication::ServerSignatures, request, response},
        metadata,
    };
    use serde::{Deserialize, Serialize};
    use serde_json::value::RawValue;

    use super::V1Answer;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
    }

    /// The signed join event.
    #[request]
    pub struct Request {
        /// The room joined.
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        /// The join event's id.
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        /// The join event.
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }

    /// The state of the room before the join and its auth chain.
    #[response]
    pub struct Response {
        /// `[200, {origin, state, auth_chain}]`.
        #[ruma_api(body)]
        pub answer: V1Answer<RoomState>,
    }

    /// What a `/v1/` join answers with.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct RoomState {
        /// The resident server that answered.
        #[serde(default)]
        pub origin: String,
        /// The state before the join.
        pub state: Vec<Box<RawValue>>,
        /// The auth chain of that state and of the join.
        pub auth_chain: Vec<Box<RawValue>>,
    }

    impl Request {
        /// A request with the given join event.
        pub fn new(room_id: OwnedRoomId, event_id: OwnedEventId, pdu: Box<RawValue>) -> Self {
            Self {
                room_id,
                event_id,
                pdu,
            }
        }
    }

    impl Response {
        /// The answer with `state`.
        pub fn new(state: RoomState) -> Self {
            Self {
                answer: V1Answer::ok(state),
            }
        }
    }
}

/// `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`
pub mod send_leave {
    use ruma::{
        OwnedEventId, OwnedRoomId,
        api::{federation::authentication::ServerSignatures, request, response},
        metadata,
    };
    use serde_json::value::RawValue;

    use super::V1Answer;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/v1/send_leave/{room_id}/{event_id}",
    }

    /// The signed leave event.
    #[request]
    pub struct Request {
        /// The room left.
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        /// The leave event's id.
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        /// The leave event.
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }

    /// `[200, {}]`.
    #[response]
    pub struct Response {
        /// `[200, {}]`.
        #[ruma_api(body)]
        pub answer: V1Answer<serde_json::Map<String, serde_json::Value>>,
    }

    impl Response {
        /// The empty answer.
        pub fn new() -> Self {
            Self {
                answer: V1Answer::ok(serde_json::Map::new()),
            }
        }
    }

    impl Default for Response {
        fn default() -> Self {
            Self::new()
        }
    }
}

/// `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}`, for rooms of versions 1 and 2.
pub mod invite {
    use ruma::{
        OwnedEventId, OwnedRoomId,
        api::{federation::authentication::ServerSignatures, request, response},
        metadata,
    };
    use serde::{Deserialize, Serialize};
    use serde_json::value::RawValue;

    use super::V1Answer;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/v1/invite/{room_id}/{event_id}",
    }

    /// The invite event, with the room's stripped state in its `unsigned`.
    #[request]
    pub struct Request {
        /// The room invited to.
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        /// The invite event's id.
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        /// The invite event.
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }

    /// `[200, {"event": ...}]`: the invite signed by the invited user's server too.
    #[response]
    pub struct Response {
        /// `[200, {"event": ...}]`.
        #[ruma_api(body)]
        pub answer: V1Answer<Signed>,
    }

    /// The countersigned invite.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Signed {
        /// The invite event, signed by both servers.
        pub event: Box<RawValue>,
    }

    impl Response {
        /// The answer with the countersigned `event`.
        pub fn new(event: Box<RawValue>) -> Self {
            Self {
                answer: V1Answer::ok(Signed { event }),
            }
        }
    }
}
