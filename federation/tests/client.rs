//! The federation client against a real HTTPS server on 127.0.0.1: TLS with a test CA or a
//! self-signed certificate, HTTP/2, the X-Matrix signature checked on the server side with
//! ruma, typed responses and Matrix errors.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_federation::{
    ClientError, ClientOptions, FederationClient, SigningKey,
    discovery::{DiscoveryError, Lookup, SrvTarget},
    tls,
};
use ruma::{
    OwnedServerName, ServerName,
    api::federation::{
        authentication::XMatrix,
        discovery::{get_server_keys, get_server_version},
        query::get_profile_information,
    },
    owned_server_name, owned_user_id,
};
use tokio::net::TcpListener;

const ORIGIN: &str = "origin.test";

/// What the test server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    /// The TLS server name the client sent (none for an IP address).
    sni: Option<String>,
    /// The ALPN protocol agreed.
    alpn: Option<Vec<u8>>,
    /// The `Host` header, or the `:authority` of an HTTP/2 request.
    host: String,
    path_and_query: String,
    /// The X-Matrix destination, when the request was signed and the signature verified.
    signed_for: Option<OwnedServerName>,
    /// Whether the request had an `Authorization` header.
    authorization: bool,
}

/// A test HTTPS server answering a few federation endpoints.
struct TestServer {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    /// Serves on 127.0.0.1 with this certificate; signatures are verified against `origin_key`.
    async fn start(certificate_pem: &str, key_pem: &str, origin_key: &SigningKey) -> Self {
        let config =
            tls::server_config_from_pem(certificate_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keys = Arc::new(BTreeMap::from([(
            ORIGIN.to_owned(),
            BTreeMap::from([(origin_key.key_id(), origin_key.public_key())]),
        )]));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let record = record.clone();
                let keys = keys.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake; that is fine.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, connection) = stream.get_ref();
                    let sni = connection.server_name().map(str::to_owned);
                    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
                    let service = service_fn(move |request| {
                        let record = record.clone();
                        let keys = keys.clone();
                        let (sni, alpn) = (sni.clone(), alpn.clone());
                        async move {
                            let (seen, response) = answer(request, &keys, sni, alpn).await;
                            record.lock().unwrap().push(seen);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { address, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The server name `127.0.0.1:<port>`.
    fn ip_server_name(&self) -> OwnedServerName {
        OwnedServerName::try_from(self.address.to_string()).unwrap()
    }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    keys: &ruma::signatures::PublicKeyMap,
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
) -> (Seen, Response<Full<Bytes>>) {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    let request = Request::from_parts(parts, body);
    let host = request
        .headers()
        .get(http::header::HOST)
        .map(|host| host.to_str().unwrap().to_owned())
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let signed_for = XMatrix::extract_from_http_headers(request.headers())
        .ok()
        .and_then(|x_matrix| {
            let destination = x_matrix.destination.clone()?;
            x_matrix
                .verify_http_request(&request, &destination, keys)
                .ok()?;
            Some(destination)
        });
    let seen = Seen {
        sni,
        alpn,
        host,
        path_and_query: request.uri().path_and_query().unwrap().to_string(),
        signed_for: signed_for.clone(),
        authorization: request.headers().contains_key(http::header::AUTHORIZATION),
    };
    let json = |status: StatusCode, body: serde_json::Value| {
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response
    };
    let response = match request.uri().path() {
        "/_matrix/federation/v1/version" => json(
            StatusCode::OK,
            serde_json::json!({ "server": { "name": "test", "version": "1.0" } }),
        ),
        "/_matrix/federation/v1/query/profile" if signed_for.is_none() => json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "errcode": "M_UNAUTHORIZED", "error": "bad signature" }),
        ),
        "/_matrix/federation/v1/query/profile"
            if request.uri().query().unwrap_or("").contains("banned") =>
        {
            json(
                StatusCode::FORBIDDEN,
                serde_json::json!({ "errcode": "M_FORBIDDEN", "error": "not for you" }),
            )
        }
        "/_matrix/federation/v1/query/profile" => json(
            StatusCode::OK,
            serde_json::json!({ "displayname": "Alice" }),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "errcode": "M_UNRECOGNIZED", "error": "unknown endpoint" }),
        ),
    };
    (seen, response)
}

/// A test CA and a certificate it issued for 127.0.0.1 and `fed.test`.
struct TestPki {
    ca_pem: String,
    certificate_pem: String,
    key_pem: String,
}

fn test_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Palisade test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_certificate = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "fed.test".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = params.signed_by(&key, &issuer).unwrap();
    TestPki {
        ca_pem: ca_certificate.pem(),
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn signing_key() -> Arc<SigningKey> {
    Arc::new(SigningKey::from_stored(&SigningKey::generate()).unwrap())
}

/// Options trusting the test CA, written to a file in `dir`.
fn trusting(pki: &TestPki, dir: &tempfile::TempDir) -> ClientOptions {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &pki.ca_pem).unwrap();
    ClientOptions {
        extra_root_certificates: vec![path],
        ..ClientOptions::default()
    }
}

struct Setup {
    server: TestServer,
    key: Arc<SigningKey>,
    options: ClientOptions,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let pki = test_pki();
    let key = signing_key();
    let server = TestServer::start(&pki.certificate_pem, &pki.key_pem, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let options = trusting(&pki, &dir);
    Setup {
        server,
        key,
        options,
        _dir: dir,
    }
}

fn client(setup: &Setup) -> FederationClient {
    FederationClient::new(
        owned_server_name!("origin.test"),
        setup.key.clone(),
        setup.options.clone(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_unsigned_request_to_an_ip_literal_reaches_it_over_h2_with_a_test_ca() {
    let setup = setup().await;
    let destination = setup.server.ip_server_name();
    let response = client(&setup)
        .send(&destination, get_server_version::v1::Request::new())
        .await
        .unwrap();
    let server = response.server.unwrap();
    assert_eq!(server.name.as_deref(), Some("test"));
    assert_eq!(server.version.as_deref(), Some("1.0"));

    let seen = setup.server.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].authorization,
        "an unauthenticated endpoint goes unsigned"
    );
    assert_eq!(seen[0].sni, None, "no SNI for an IP address");
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen[0].host, destination.as_str());
}

#[tokio::test]
async fn a_signed_request_verifies_on_the_server_with_the_senders_public_key() {
    let setup = setup().await;
    let destination = setup.server.ip_server_name();
    let client = client(&setup);
    let request = get_profile_information::v1::Request::new(owned_user_id!("@alice:remote.test"));
    let response = client.send(&destination, request).await.unwrap();
    assert_eq!(
        response.get("displayname"),
        Some(&serde_json::json!("Alice"))
    );

    let seen = setup.server.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].authorization);
    assert_eq!(seen[0].signed_for.as_ref(), Some(&destination));
    assert_eq!(
        seen[0].path_and_query,
        "/_matrix/federation/v1/query/profile?user_id=%40alice%3Aremote.test"
    );

    // A second request reuses the pooled connection and is signed afresh.
    let request = get_profile_information::v1::Request::new(owned_user_id!("@bob:remote.test"));
    client.send(&destination, request).await.unwrap();
    assert_eq!(
        setup.server.seen()[1].signed_for.as_ref(),
        Some(&destination)
    );
}

#[tokio::test]
async fn a_signature_from_another_key_is_rejected_and_that_is_a_remote_401() {
    let setup = setup().await;
    let stranger = FederationClient::new(
        owned_server_name!("origin.test"),
        signing_key(),
        setup.options.clone(),
    )
    .unwrap();
    let request = get_profile_information::v1::Request::new(owned_user_id!("@alice:remote.test"));
    let error = stranger
        .send(&setup.server.ip_server_name(), request)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(error.errcode(), Some("M_UNAUTHORIZED"));
}

#[tokio::test]
async fn a_matrix_error_comes_back_as_remote_with_status_errcode_and_message() {
    let setup = setup().await;
    let request = get_profile_information::v1::Request::new(owned_user_id!("@banned:remote.test"));
    let error = client(&setup)
        .send(&setup.server.ip_server_name(), request)
        .await
        .unwrap_err();
    match error {
        ClientError::Remote {
            status,
            errcode,
            error,
        } => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(errcode.as_deref(), Some("M_FORBIDDEN"));
            assert_eq!(error.as_deref(), Some("not for you"));
        }
        other => panic!("expected Remote, got {other:?}"),
    }

    let error = client(&setup)
        .send(
            &setup.server.ip_server_name(),
            get_server_keys::v2::Request::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(error.errcode(), Some("M_UNRECOGNIZED"));
}

#[tokio::test]
async fn an_untrusted_certificate_fails_when_verification_is_on() {
    let setup = setup().await;
    let without_ca = FederationClient::new(
        owned_server_name!("origin.test"),
        setup.key.clone(),
        ClientOptions::default(),
    )
    .unwrap();
    let error = without_ca
        .send(
            &setup.server.ip_server_name(),
            get_server_version::v1::Request::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(setup.server.seen().is_empty());
}

#[tokio::test]
async fn verification_off_accepts_a_self_signed_certificate() {
    let key = signing_key();
    let (certificate, private_key) = tls::self_signed(&["127.0.0.1".to_owned()]).unwrap();
    let server = TestServer::start(&certificate, &private_key, &key).await;
    let options = ClientOptions {
        verify_certificates: false,
        ..ClientOptions::default()
    };
    let client = FederationClient::new(owned_server_name!("origin.test"), key, options).unwrap();
    let request = get_profile_information::v1::Request::new(owned_user_id!("@alice:remote.test"));
    client
        .send(&server.ip_server_name(), request)
        .await
        .unwrap();
    assert!(server.seen()[0].signed_for.is_some());

    // The same certificate is refused with verification on.
    let verifying = FederationClient::new(
        owned_server_name!("origin.test"),
        signing_key(),
        ClientOptions::default(),
    )
    .unwrap();
    let error = verifying
        .send(
            &server.ip_server_name(),
            get_server_version::v1::Request::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
}

#[tokio::test]
async fn a_response_over_the_size_cap_is_a_bad_response() {
    let setup = setup().await;
    let options = ClientOptions {
        max_response_size: 10,
        ..setup.options.clone()
    };
    let client = FederationClient::new(
        owned_server_name!("origin.test"),
        setup.key.clone(),
        options,
    )
    .unwrap();
    let error = client
        .send(
            &setup.server.ip_server_name(),
            get_server_version::v1::Request::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::BadResponse(_)), "{error:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error() {
    let setup = setup().await;
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let destination = OwnedServerName::try_from(closed.local_addr().unwrap().to_string()).unwrap();
    drop(closed);
    let error = client(&setup)
        .send(&destination, get_server_version::v1::Request::new())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
}

/// Discovery answers for `fed.test`: SRV to `backend.fed.test` on the test server's port,
/// both names on 127.0.0.1.
struct FedTest {
    port: u16,
}

impl Lookup for FedTest {
    async fn well_known(&self, _: &str) -> Option<OwnedServerName> {
        None
    }

    async fn srv(&self, name: &str) -> Vec<SrvTarget> {
        if name == "_matrix-fed._tcp.fed.test" {
            vec![SrvTarget {
                host: "backend.fed.test".to_owned(),
                port: self.port,
            }]
        } else {
            Vec::new()
        }
    }

    async fn ips(&self, hostname: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
        match hostname {
            "fed.test" | "backend.fed.test" => Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            _ => Err(DiscoveryError {
                host: hostname.to_owned(),
                reason: "unknown".to_owned(),
            }),
        }
    }
}

#[tokio::test]
async fn a_hostname_is_reached_at_the_discovered_address_under_its_own_name() {
    let setup = setup().await;
    let client = FederationClient::with_lookup(
        owned_server_name!("origin.test"),
        setup.key.clone(),
        setup.options.clone(),
        FedTest {
            port: setup.server.address.port(),
        },
    )
    .unwrap();

    // Through the SRV record: no port in the name, so `Host: fed.test`.
    let srv_destination: &ServerName = "fed.test".try_into().unwrap();
    let request = get_profile_information::v1::Request::new(owned_user_id!("@alice:fed.test"));
    client.send(srv_destination, request).await.unwrap();

    // With an explicit port: `Host: fed.test:<port>`.
    let port_destination =
        OwnedServerName::try_from(format!("fed.test:{}", setup.server.address.port())).unwrap();
    let request = get_profile_information::v1::Request::new(owned_user_id!("@alice:fed.test"));
    client.send(&port_destination, request).await.unwrap();

    let seen = setup.server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].sni.as_deref(), Some("fed.test"));
    assert_eq!(seen[0].host, "fed.test");
    assert_eq!(seen[0].signed_for.as_deref(), Some(srv_destination));
    assert_eq!(seen[1].sni.as_deref(), Some("fed.test"));
    assert_eq!(seen[1].host, port_destination.as_str());
    assert_eq!(seen[1].signed_for.as_ref(), Some(&port_destination));
}

#[test]
fn the_client_and_its_send_future_can_move_between_threads() {
    fn send_and_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let key = signing_key();
    let client = FederationClient::new(
        owned_server_name!("origin.test"),
        key,
        ClientOptions::default(),
    );
    // Building needs no runtime; only sending does.
    let client = client.unwrap();
    send_and_sync(&client);
    send(client.send(
        ruma::server_name!("example.org"),
        get_server_version::v1::Request::new(),
    ));
}
