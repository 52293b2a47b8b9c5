//! `required_state`: which state entries a client asked for, with MSC4186's wildcards
//! (`*` as the type or the state key), `$ME` (the user's own state key) and `$LAZY`
//! (the members of the timeline's senders).

use std::collections::BTreeSet;

use ruma::UserId;

/// The entries a room's `required_state` asks for, merged over every list and
/// subscription that includes the room.
#[derive(Clone, Debug, Default)]
pub struct Required {
    /// As the client wrote them, for telling whether a room was sent with fewer.
    pub entries: BTreeSet<(String, String)>,
}

impl Required {
    pub fn add(&mut self, entries: &[(ruma::events::StateEventType, String)]) {
        for (kind, state_key) in entries {
            self.entries.insert((kind.to_string(), state_key.clone()));
        }
    }

    /// Whether `$LAZY` members are asked for.
    pub fn lazy(&self) -> bool {
        self.entries
            .contains(&("m.room.member".to_owned(), "$LAZY".to_owned()))
    }

    /// Whether this state entry is wanted. Members asked for as `$LAZY` count when in
    /// `lazy_members`.
    pub fn wants(
        &self,
        kind: &str,
        state_key: &str,
        user: &UserId,
        lazy_members: &BTreeSet<String>,
    ) -> bool {
        let own = state_key == user.as_str();
        self.entries.iter().any(|(want_kind, want_key)| {
            let kind_matches = want_kind == "*" || want_kind == kind;
            let key_matches = match want_key.as_str() {
                "*" => true,
                "$ME" => own,
                "$LAZY" => kind == "m.room.member" && lazy_members.contains(state_key),
                key => key == state_key,
            };
            kind_matches && key_matches
        })
    }

    /// A short name for these entries, kept for each room a connection was sent instead
    /// of the entries themselves (the same for the same entries, across restarts).
    pub fn id(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        self.entries.hash(&mut hasher);
        hasher.finish()
    }

    /// Whether `self` asks for nothing `sent` did not.
    pub fn within(&self, sent: &BTreeSet<(String, String)>) -> bool {
        self.entries.is_subset(sent)
    }
}

/// A room's display name as the spec computes it for a room without `m.room.name` or
/// an alias: from its heroes (their display names), with how many others there are;
/// "Empty Room" when the user is alone.
pub fn name_from_heroes(hero_names: &[String], others: u64) -> String {
    let shown = hero_names.len() as u64;
    match hero_names {
        [] => "Empty Room".to_owned(),
        [one] if others <= 1 => one.clone(),
        [one, two] if others <= 2 => format!("{one} and {two}"),
        names if others > shown => {
            format!("{} and {} others", names.join(", "), others - shown)
        }
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::events::StateEventType;

    #[test]
    fn wildcards_me_and_lazy() {
        let mut required = Required::default();
        required.add(&[
            (StateEventType::RoomName, String::new()),
            (StateEventType::RoomMember, "$LAZY".to_owned()),
            (StateEventType::RoomMember, "$ME".to_owned()),
            (StateEventType::SpaceChild, "*".to_owned()),
        ]);
        let me = ruma::user_id!("@me:x");
        let lazy = BTreeSet::from(["@bob:x".to_owned()]);
        assert!(required.wants("m.room.name", "", me, &lazy));
        assert!(!required.wants("m.room.topic", "", me, &lazy));
        assert!(required.wants("m.room.member", "@me:x", me, &lazy));
        assert!(required.wants("m.room.member", "@bob:x", me, &lazy));
        assert!(!required.wants("m.room.member", "@eve:x", me, &lazy));
        assert!(required.wants("m.space.child", "!a:x", me, &lazy));
        assert!(required.lazy());
        let mut all = Required::default();
        all.add(&[(StateEventType::from("*"), "*".to_owned())]);
        assert!(all.wants("m.room.member", "@eve:x", me, &BTreeSet::new()));
    }

    #[test]
    fn names_from_heroes() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(name_from_heroes(&[], 0), "Empty Room");
        assert_eq!(name_from_heroes(&names(&["Alice"]), 1), "Alice");
        assert_eq!(
            name_from_heroes(&names(&["Alice", "Bob"]), 2),
            "Alice and Bob"
        );
        assert_eq!(
            name_from_heroes(&names(&["Alice", "Bob", "Carol"]), 3),
            "Alice, Bob and Carol"
        );
        assert_eq!(
            name_from_heroes(&names(&["A", "B", "C", "D", "E"]), 9),
            "A, B, C, D, E and 4 others"
        );
    }
}
