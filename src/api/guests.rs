//! What a guest account may do: the endpoints the spec's guest access module lists
//! (reading and talking in rooms that let guests in, syncing, its own profile, devices
//! and keys, upgrading itself). Anything else answers `403 M_GUEST_ACCESS_FORBIDDEN`.

use http::Method;

/// `(method, path after /_matrix/client/<version>/)`; `*` stands for one segment.
const ALLOWED: &[(&str, &str)] = &[
    ("GET", "sync"),
    ("GET", "events"),
    ("GET", "initialSync"),
    ("GET", "rooms/*/initialSync"),
    ("GET", "rooms/*/state"),
    ("GET", "rooms/*/state/*"),
    ("GET", "rooms/*/state/*/*"),
    ("GET", "rooms/*/context/*"),
    ("GET", "rooms/*/event/*"),
    ("GET", "rooms/*/members"),
    ("GET", "rooms/*/joined_members"),
    ("GET", "rooms/*/messages"),
    ("POST", "rooms/*/join"),
    ("POST", "join/*"),
    ("POST", "rooms/*/leave"),
    ("PUT", "rooms/*/send/m.room.message/*"),
    ("PUT", "rooms/*/typing/*"),
    ("POST", "rooms/*/receipt/*/*"),
    ("POST", "rooms/*/read_markers"),
    ("GET", "publicRooms"),
    ("GET", "profile/*"),
    ("GET", "profile/*/*"),
    ("PUT", "profile/*/displayname"),
    ("PUT", "profile/*/avatar_url"),
    ("GET", "account/whoami"),
    ("GET", "capabilities"),
    ("GET", "pushrules/"),
    ("GET", "user/*/filter/*"),
    ("POST", "user/*/filter"),
    ("GET", "user/*/account_data/*"),
    ("PUT", "user/*/account_data/*"),
    ("GET", "user/*/rooms/*/account_data/*"),
    ("PUT", "user/*/rooms/*/account_data/*"),
    ("GET", "devices"),
    ("GET", "devices/*"),
    ("PUT", "devices/*"),
    ("POST", "keys/upload"),
    ("POST", "keys/query"),
    ("POST", "keys/claim"),
    ("GET", "keys/changes"),
    ("PUT", "sendToDevice/*/*"),
    ("GET", "voip/turnServer"),
    ("POST", "register"),
    ("POST", "logout"),
];

/// Whether a guest may make a request with `method` to `path`.
pub fn may(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/_matrix/client/") else {
        return true; // Not the client API: nothing guest-specific.
    };
    let Some((_version, rest)) = rest.split_once('/') else {
        return false;
    };
    ALLOWED.iter().any(|(allowed_method, pattern)| {
        *allowed_method == method.as_str() && matches(pattern, rest)
    })
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut segments = path.split('/');
    for expected in pattern.split('/') {
        match segments.next() {
            Some(segment) if expected == "*" || expected == segment => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_read_and_talk_but_do_not_create_rooms() {
        assert!(may(&Method::GET, "/_matrix/client/v3/sync"));
        assert!(may(
            &Method::PUT,
            "/_matrix/client/v3/rooms/!a:x/send/m.room.message/1"
        ));
        assert!(may(&Method::POST, "/_matrix/client/r0/rooms/!a:x/join"));
        assert!(!may(&Method::POST, "/_matrix/client/v3/createRoom"));
        assert!(!may(
            &Method::PUT,
            "/_matrix/client/v3/rooms/!a:x/send/m.reaction/1"
        ));
        assert!(!may(
            &Method::PUT,
            "/_matrix/client/v3/rooms/!a:x/state/m.room.name/"
        ));
        assert!(!may(
            &Method::GET,
            "/_matrix/client/v3/rooms/!a:x/messages/extra"
        ));
    }
}
