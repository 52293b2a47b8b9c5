//! User-interactive authentication for the endpoints that re-check who the user is
//! (deleting devices, changing passwords, deactivating): one stage, `m.login.password`.

use ruma::{
    OwnedUserId, ServerName, UserId,
    api::{
        client::uiaa::{AuthData, AuthType, UserIdentifier},
        error::ErrorKind,
    },
};

use crate::{
    Error, Result,
    api::Ruma,
    service::{Services, threepids::Address, uiaa::Operation},
};

/// What a request asks to be done, which the session it continues must have been opened
/// for: its user, method, path with query, and body without `auth`.
pub fn operation<T>(request: &Ruma<T>) -> Operation {
    let path = request
        .uri
        .path_and_query()
        .map_or(request.uri.path(), |p| p.as_str());
    Operation::new(
        request.sender.as_ref().map(|sender| &*sender.user_id),
        request.method.as_str(),
        path,
        request.json.as_ref(),
    )
}

/// Resolves a login identifier to a local user: `m.id.user` with a localpart or full id,
/// `m.id.phone` (country and number as typed) or `m.id.thirdparty` (an email address or
/// phone number on an account).
///
/// An address on no account fails as a wrong password does (403 `M_FORBIDDEN`, as on
/// Synapse), so logins do not tell which addresses have accounts; an identifier type the
/// spec does not define is the spec's 400 `M_UNKNOWN`.
pub fn user_from_identifier(
    services: &Services,
    identifier: &UserIdentifier,
) -> Result<OwnedUserId> {
    let server_name = &services.config.server_name;
    let wrong = || Error::forbidden("Invalid username or password");
    let address = match identifier {
        UserIdentifier::Matrix(matrix) => return user_from_name(&matrix.user, server_name),
        UserIdentifier::PhoneNumber(phone) => Address::phone(&phone.country, &phone.phone),
        other => match other.as_third_party_id() {
            Some((medium, address)) => Address::parse(medium, address),
            None => return Err(unknown_identifier()),
        },
    };
    let address = address.map_err(|_| wrong())?;
    services.threepids.owner(&address)?.ok_or_else(wrong)
}

fn unknown_identifier() -> Error {
    Error::new(ErrorKind::Unknown, "Unknown login identifier type")
        .with_status(http::StatusCode::BAD_REQUEST)
}

/// A localpart or full user id, as typed at a login prompt.
pub fn user_from_name(name: &str, server_name: &ServerName) -> Result<OwnedUserId> {
    let full = if name.starts_with('@') {
        name.to_lowercase()
    } else {
        format!("@{}:{server_name}", name.to_lowercase())
    };
    let user = OwnedUserId::try_from(full)
        .map_err(|_| Error::forbidden("Invalid username or password"))?;
    if user.server_name() != server_name {
        return Err(Error::forbidden("Invalid username or password"));
    }
    Ok(user)
}

/// Requires `user` to confirm with their password for `operation`. Returns `Ok` once
/// they have. Confirming as another user is a 403, not a failed stage.
pub async fn require_password(
    services: &Services,
    user: &UserId,
    auth: Option<&AuthData>,
    operation: &Operation,
) -> Result<()> {
    let flows = [vec![AuthType::Password]];
    let Some(auth) = auth else {
        return Err(services.uiaa.challenge(&flows, operation));
    };
    let session = auth.session().map(str::to_owned);
    let AuthData::Password(password) = auth else {
        return match &session {
            Some(session) if services.uiaa.knows(session) => Err(services.uiaa.failed(
                session,
                &flows,
                Error::forbidden("Confirm with m.login.password"),
            )),
            _ => Err(services.uiaa.challenge(&flows, operation)),
        };
    };
    let Some(session) = services.uiaa.session_for(session.as_deref(), operation)? else {
        return Err(services.uiaa.challenge(&flows, operation));
    };
    let claimed = user_from_identifier(services, &password.identifier)?;
    if claimed != user {
        return Err(Error::forbidden("You can only confirm as yourself"));
    }
    let checked = services
        .users
        .check_password(user, &password.password)
        .await;
    match checked {
        Ok(()) => services
            .uiaa
            .complete_stage(&session, AuthType::Password, &flows),
        Err(error) => Err(services.uiaa.failed(&session, &flows, error)),
    }
}
