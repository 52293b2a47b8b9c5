//! A local user joining a room this server is not in, through a server that is
//! (`make_join`, then `send_join` v2); and the resident side's join template.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedServerName, RoomAliasId, RoomId,
    RoomVersionId, ServerName, UserId,
    api::federation::{
        membership::{
            create_join_event, create_knock_event, create_leave_event, prepare_join_event,
            prepare_knock_event, prepare_leave_event,
        },
        query::get_room_information,
    },
    events::room::member::MembershipState,
};

use std::sync::Arc;

use palisade_federation::{ClientError, FederationClient, SigningKey, v1};

use super::{
    keys::ServerKeys,
    pdu::{event_id_of, verify_pdu},
    receive::store_outliers,
};
use crate::{
    Error, Result,
    service::{
        rooms::{
            Rooms,
            incoming::{Accepted, Relay},
            membership::Profile,
            pdu::SignedPdu,
            state::StateMap,
        },
        users::{Users, now_ms},
    },
};

/// Memberships that cross servers: joining, knocking and leaving through a server in
/// the room (here), invites both ways (`invite.rs`).
pub struct Memberships {
    pub(super) server_name: ruma::OwnedServerName,
    pub(super) enabled: bool,
    pub(super) signing_key: Arc<SigningKey>,
    pub(super) client: Arc<FederationClient>,
    pub(super) keys: Arc<ServerKeys>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) users: Arc<Users>,
}

impl Memberships {
    /// Resolves an alias of another server through that server's directory.
    pub async fn resolve_remote_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let response = self
            .client
            .send(
                alias.server_name(),
                get_room_information::v1::Request::new(alias.to_owned()),
            )
            .await
            .map_err(|error| match error.status() {
                Some(http::StatusCode::NOT_FOUND) => Error::not_found("Unknown room alias"),
                _ => Error::not_found(format!("The alias's server could not be asked: {error}")),
            })?;
        Ok((response.room_id, response.servers))
    }

    /// The servers to try for a room this server is not in: `via` (without this server),
    /// then the server in the room id (room versions before 12).
    fn candidate_servers(&self, room_id: &RoomId, via: &[OwnedServerName]) -> Vec<OwnedServerName> {
        let mut servers: Vec<OwnedServerName> = via
            .iter()
            .filter(|server| **server != self.server_name)
            .cloned()
            .collect();
        if let Some(server) = room_id.server_name()
            && server != self.server_name
            && !servers.iter().any(|s| s == server)
        {
            servers.push(server.to_owned());
        }
        servers
    }

    /// Joins `user` to a room this server has no member in, through one of `via`.
    pub async fn join_remote(
        &self,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        profile: &Profile,
        reason: Option<&str>,
    ) -> Result<()> {
        self.through_any(user, room_id, via, Handshake::Join(profile), reason)
            .await
    }

    /// Tries the handshake with each candidate server in turn until one works; the last
    /// error otherwise.
    async fn through_any(
        &self,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        handshake: Handshake<'_>,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut last_error = Error::not_found("No known servers for this room");
        for server in &self.candidate_servers(room_id, via) {
            let attempt = match &handshake {
                Handshake::Join(profile) => {
                    self.join_through(server, user, room_id, profile, reason)
                        .await
                }
                Handshake::Knock => self.knock_through(server, user, room_id, reason).await,
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "remote membership handshake failed");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// Joins `user` to a restricted room this server is in but cannot let them into
    /// itself (no member here may invite, or this server is in none of the rooms that
    /// allow the join): another server of the room vouches for the join, through
    /// `make_join`/`send_join`, and the join it signed is appended here as if it had
    /// sent it.
    pub async fn join_resident_through_others(
        &self,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        profile: &Profile,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut servers = self.candidate_servers(room_id, via);
        for server in self.rooms.remote_servers(room_id)? {
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
        let mut last_error = Error::new(
            ruma::api::error::ErrorKind::UnableToGrantJoin,
            "No server of the room may let you in",
        );
        for server in &servers {
            let attempt = async {
                let (_, join, _) = self
                    .join_handshake(server, user, room_id, profile, reason)
                    .await?;
                match self.rooms.append_remote(room_id, join, Relay::None).await? {
                    Accepted::Timeline | Accepted::Known => Ok(()),
                    Accepted::SoftFailed => Err(Error::forbidden(
                        "The join another server signed fails against this room's state",
                    )),
                }
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "join through another resident server failed");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// `make_join` then `send_join` with `server`: the room's version, the join as the
    /// resident server signed it (checked), and the room's state and auth chain.
    async fn join_handshake(
        &self,
        server: &OwnedServerName,
        user: &UserId,
        room_id: &RoomId,
        profile: &Profile,
        reason: Option<&str>,
    ) -> Result<(RoomVersionId, SignedPdu, create_join_event::v2::RoomState)> {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = crate::service::rooms::ROOM_VERSIONS.to_vec();
        let template = self
            .client
            .send(server, request)
            .await
            .map_err(|error| refusal(error, "join", "prepared"))?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let mut content = with_reason(reason);
        if let Some(name) = &profile.0 {
            content.insert("displayname".to_owned(), name.as_str().into());
        }
        if let Some(url) = &profile.1 {
            content.insert("avatar_url".to_owned(), url.as_str().into());
        }
        let (object, event_id) = self.fill_template(
            &template.event,
            &version,
            user,
            room_id,
            MembershipState::Join,
            content,
        )?;
        let raw = Rooms::raw_object(&object)?;
        let room_state = self
            .send_join(server, room_id, &event_id, &raw)
            .await
            .map_err(|error| refusal(error, "join", "accepted"))?;
        // A restricted join comes back signed by the resident server too.
        let join_raw = room_state.event.clone().unwrap_or(raw);
        let join = verify_pdu(&self.keys, &version, &join_raw).await?;
        if join.event_id != event_id {
            return Err(Error::forbidden(
                "The resident server changed the join event",
            ));
        }
        Ok((version, join, room_state))
    }

    async fn join_through(
        &self,
        server: &OwnedServerName,
        user: &UserId,
        room_id: &RoomId,
        profile: &Profile,
        reason: Option<&str>,
    ) -> Result<()> {
        let (version, join, room_state) = self
            .join_handshake(server, user, room_id, profile, reason)
            .await?;
        let mut everything = room_state.auth_chain.clone();
        everything.extend(room_state.state.iter().cloned());
        store_outliers(&self.keys, &self.rooms, room_id, &version, &everything).await?;
        let mut state = StateMap::new();
        for raw in &room_state.state {
            let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                continue;
            };
            let Ok(id) = event_id_of(&object, &version) else {
                continue;
            };
            if let Some(event) = self.rooms.state_event(&id)?
                && let Some(state_key) = &event.state_key
            {
                state.insert((event.kind.to_string(), state_key.clone()), id);
            }
        }
        if !state.contains_key(&("m.room.create".to_owned(), String::new())) {
            return Err(Error::forbidden(
                "The room's state came without its create event",
            ));
        }
        self.rooms
            .create_joined(room_id, &version, state, join)
            .await
    }

    /// Completes a membership event template from another server as this server's
    /// `user`'s own event, and signs it; returns it with its event id.
    fn fill_template(
        &self,
        template: &serde_json::value::RawValue,
        version: &RoomVersionId,
        user: &UserId,
        room_id: &RoomId,
        membership: MembershipState,
        extra_content: CanonicalJsonObject,
    ) -> Result<(CanonicalJsonObject, ruma::OwnedEventId)> {
        let rules = Rooms::rules(version)?;
        let mut object: CanonicalJsonObject = serde_json::from_str(template.get())
            .map_err(|error| Error::bad_json(format!("Bad event template: {error}")))?;
        // What this server vouches for, whatever the template said.
        object.insert("sender".to_owned(), user.as_str().into());
        object.insert("state_key".to_owned(), user.as_str().into());
        object.insert("type".to_owned(), "m.room.member".into());
        object.insert("room_id".to_owned(), room_id.as_str().into());
        object.insert(
            "origin_server_ts".to_owned(),
            CanonicalJsonValue::Integer(ruma::Int::try_from(now_ms()).unwrap_or_default()),
        );
        object.remove("signatures");
        object.remove("hashes");
        object.remove("unsigned");
        let mut content = match object.remove("content") {
            Some(CanonicalJsonValue::Object(content)) => content,
            _ => CanonicalJsonObject::new(),
        };
        content.insert("membership".to_owned(), membership.as_str().into());
        content.extend(extra_content);
        object.insert("content".to_owned(), CanonicalJsonValue::Object(content));
        if rules.event_id_format == ruma::room_version_rules::EventIdFormatVersion::V1 {
            object.insert(
                "event_id".to_owned(),
                format!(
                    "${}:{}",
                    crate::service::users::random_localpart(),
                    self.server_name
                )
                .into(),
            );
            object.insert("origin".to_owned(), self.server_name.as_str().into());
        } else {
            object.remove("event_id");
        }
        self.signing_key
            .sign_event(&self.server_name, &mut object, &rules.redaction)
            .map_err(Error::internal)?;
        let event_id = event_id_of(&object, version)?;
        Ok((object, event_id))
    }

    /// Declines an invite into a room this server is not in: a leave through the
    /// inviter's server (`make_leave`, `send_leave`). Whether or not that server could be
    /// told, the invite is gone for the user.
    pub async fn decline_remote_invite(
        &self,
        user: &UserId,
        room_id: &RoomId,
        inviter_server: Option<&ServerName>,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut servers: Vec<OwnedServerName> =
            inviter_server.map(ToOwned::to_owned).into_iter().collect();
        if let Some(server) = room_id.server_name()
            && !servers.iter().any(|s| s == server)
        {
            servers.push(server.to_owned());
        }
        for server in servers {
            if server == self.server_name {
                continue;
            }
            match self.leave_through(&server, user, room_id, reason).await {
                Ok(()) => break,
                Err(error) => tracing::info!(%room_id, %server, %error, "remote leave failed"),
            }
        }
        self.rooms.forget_remote_invite(room_id, user).await
    }

    async fn leave_through(
        &self,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<()> {
        let template = self
            .client
            .send(
                server,
                prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned()),
            )
            .await
            .map_err(|error| Error::forbidden(format!("The leave was not prepared: {error}")))?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let content = with_reason(reason);
        let (object, event_id) = self.fill_template(
            &template.event,
            &version,
            user,
            room_id,
            MembershipState::Leave,
            content,
        )?;
        self.client
            .send(
                server,
                create_leave_event::v2::Request::new(
                    room_id.to_owned(),
                    event_id,
                    Rooms::raw_object(&object)?,
                ),
            )
            .await
            .map_err(|error| Error::forbidden(format!("The leave was not accepted: {error}")))?;
        Ok(())
    }

    /// Knocks on a room this server is not in, through one of `via`: `make_knock`, then
    /// `send_knock`; the room's stripped state that comes back is kept for the user's sync.
    pub async fn knock_remote(
        &self,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        reason: Option<&str>,
    ) -> Result<()> {
        self.through_any(user, room_id, via, Handshake::Knock, reason)
            .await
    }

    async fn knock_through(
        &self,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut request =
            prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = crate::service::rooms::ROOM_VERSIONS.to_vec();
        let template = self
            .client
            .send(server, request)
            .await
            .map_err(|error| refusal(error, "knock", "prepared"))?;
        let version = template.room_version;
        let content = with_reason(reason);
        let (object, event_id) = self.fill_template(
            &template.event,
            &version,
            user,
            room_id,
            MembershipState::Knock,
            content,
        )?;
        let raw = Rooms::raw_object(&object)?;
        let response = self
            .client
            .send(
                server,
                create_knock_event::v1::Request::new(
                    room_id.to_owned(),
                    event_id.clone(),
                    raw.clone(),
                ),
            )
            .await
            .map_err(|error| refusal(error, "knock", "accepted"))?;
        let knock = verify_pdu(&self.keys, &version, &raw).await?;
        let stripped = super::invite::stripped_state(&response.knock_room_state, &object)?;
        self.rooms
            .store_remote_membership(room_id, user, MembershipState::Knock, knock, stripped)
            .await
    }
}

/// A membership handshake with a server in the room.
enum Handshake<'a> {
    Join(&'a Profile),
    Knock,
}

/// The error for a failed step of a membership handshake with another server.
fn refusal(error: palisade_federation::ClientError, what: &str, step: &str) -> Error {
    match error.status() {
        Some(http::StatusCode::FORBIDDEN) => {
            Error::forbidden(format!("The room refused the {what}: {error}"))
        }
        _ => Error::not_found(format!("The {what} was not {step}: {error}")),
    }
}

impl Memberships {
    /// `send_join` v2, or v1 where the server knows only that (older servers).
    async fn send_join(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        raw: &serde_json::value::RawValue,
    ) -> std::result::Result<create_join_event::v2::RoomState, ClientError> {
        let request = create_join_event::v2::Request::new(
            room_id.to_owned(),
            event_id.to_owned(),
            raw.to_owned(),
        );
        match self.client.send(server, request).await {
            Ok(response) => Ok(response.room_state),
            Err(error) if error.is_unknown_endpoint() => {
                let request = v1::send_join::Request::new(
                    room_id.to_owned(),
                    event_id.to_owned(),
                    raw.to_owned(),
                );
                let answer = self.client.send(server, request).await?.answer.1;
                let mut room_state = create_join_event::v2::RoomState::new();
                room_state.state = answer.state;
                room_state.auth_chain = answer.auth_chain;
                Ok(room_state)
            }
            Err(error) => Err(error),
        }
    }
}

/// Membership content with the user's reason, if they gave one.
fn with_reason(reason: Option<&str>) -> CanonicalJsonObject {
    let mut content = CanonicalJsonObject::new();
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), reason.into());
    }
    content
}
