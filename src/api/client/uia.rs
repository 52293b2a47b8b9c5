//! User-interactive authentication for the endpoints that re-check who the user is
//! (deleting devices, changing passwords, deactivating): `m.login.password`, or a code
//! sent to a phone number or email address on the account.

use ruma::{
    OwnedUserId, ServerName, UserId,
    api::{
        client::uiaa::{AuthData, AuthType, ThirdpartyIdCredentials, UserIdentifier},
        error::ErrorKind,
    },
    thirdparty::Medium,
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

/// The ways `user` may confirm who they are: their password, or a code sent to a phone
/// number or email address on their account (a verified session of
/// `/account/password/{medium}/requestToken`), where codes can be sent.
fn reauthentication_flows(services: &Services, user: &UserId) -> Result<Vec<Vec<AuthType>>> {
    let mut flows = vec![vec![AuthType::Password]];
    let addresses = services.threepids.of_user(user)?;
    for (medium, stage) in [
        (Medium::Msisdn, AuthType::Msisdn),
        (Medium::Email, AuthType::EmailIdentity),
    ] {
        if services.threepids.offers(&medium)
            && addresses
                .iter()
                .any(|(address, _)| address.medium == medium)
        {
            flows.push(vec![stage]);
        }
    }
    Ok(flows)
}

/// Requires `user` to confirm who they are for `operation`: with their password, or
/// with a code sent to an address on their account (so users who signed up with only a
/// phone number can too). Returns `Ok` once they have. Confirming as another user is a
/// 403, not a failed stage.
pub async fn reauthenticate(
    services: &Services,
    user: &UserId,
    auth: Option<&AuthData>,
    operation: &Operation,
) -> Result<()> {
    let flows = reauthentication_flows(services, user)?;
    let Some(auth) = auth else {
        return Err(services.uiaa.challenge(&flows, operation));
    };
    let session = auth.session().map(str::to_owned);
    let (creds, stage) = match auth {
        AuthData::Password(_) => (None, AuthType::Password),
        AuthData::Msisdn(msisdn) => (Some(&msisdn.thirdparty_id_creds), AuthType::Msisdn),
        AuthData::EmailIdentity(email) => {
            (Some(&email.thirdparty_id_creds), AuthType::EmailIdentity)
        }
        _ => (None, AuthType::Dummy),
    };
    let offered = flows.iter().any(|flow| flow.contains(&stage));
    if !offered {
        return match &session {
            Some(session) if services.uiaa.knows(session) => Err(services.uiaa.failed(
                session,
                &flows,
                Error::forbidden("Confirm with your password or a code"),
            )),
            _ => Err(services.uiaa.challenge(&flows, operation)),
        };
    }
    let Some(session) = services.uiaa.session_for(session.as_deref(), operation)? else {
        return Err(services.uiaa.challenge(&flows, operation));
    };
    let checked = match (auth, creds) {
        (AuthData::Password(password), _) => {
            let claimed = user_from_identifier(services, &password.identifier)?;
            if claimed != user {
                return Err(Error::forbidden("You can only confirm as yourself"));
            }
            services
                .users
                .check_password(user, &password.password)
                .await
        }
        (_, Some(creds)) => own_address(services, user, creds),
        _ => Err(Error::forbidden("Unsupported stage")),
    };
    match checked {
        Ok(()) => services.uiaa.complete_stage(&session, stage, &flows),
        Err(error) => Err(services.uiaa.failed(&session, &flows, error)),
    }
}

/// Checks that a verified session proves an address on `user`'s account, and uses it.
fn own_address(services: &Services, user: &UserId, creds: &ThirdpartyIdCredentials) -> Result<()> {
    let verified = services
        .threepids
        .verified(creds.sid.as_str(), creds.client_secret.as_str())?;
    if services.threepids.owner(&verified.address)?.as_deref() != Some(user) {
        return Err(Error::new(
            ErrorKind::ThreepidAuthFailed,
            "This address is not on your account",
        ));
    }
    services.threepids.use_session(creds.sid.as_str())
}
