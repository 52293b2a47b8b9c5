//! How this server fills in the authentication of the federation endpoints' schemes.

use ruma::{
    ServerName,
    api::{
        auth_scheme::{AuthScheme, NoAuthentication},
        federation::authentication::{ServerSignatures, XMatrixSigningInput},
    },
    signatures::Ed25519KeyPair,
};

/// An authentication scheme a federation request can use, with the input this server gives it.
pub trait OutgoingAuthentication: AuthScheme {
    /// The scheme's input for a request from `origin` to `destination`, signed with `key`
    /// where the scheme signs.
    fn input<'a>(
        origin: &ServerName,
        destination: &ServerName,
        key: &'a Ed25519KeyPair,
    ) -> Self::Input<'a>;
}

/// `X-Matrix`: the request is signed with this server's key.
impl OutgoingAuthentication for ServerSignatures {
    fn input<'a>(
        origin: &ServerName,
        destination: &ServerName,
        key: &'a Ed25519KeyPair,
    ) -> XMatrixSigningInput<'a> {
        XMatrixSigningInput::new(origin.to_owned(), destination.to_owned(), key)
    }
}

/// Unauthenticated endpoints (`/_matrix/key/v2/server`, `/_matrix/federation/v1/version`).
impl OutgoingAuthentication for NoAuthentication {
    fn input<'a>(_: &ServerName, _: &ServerName, _: &'a Ed25519KeyPair) -> Self::Input<'a> {}
}
