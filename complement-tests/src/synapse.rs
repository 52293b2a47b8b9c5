//! A Synapse homeserver owned by one test, the other side of the federation tests.
//!
//! Its server name is `127.0.0.1:<federation port>`: an IP literal with an explicit port,
//! so servers reach it directly, without `.well-known` or DNS. The client API is plain
//! HTTP on another loopback port; federation is HTTPS with a certificate from the test's
//! [`TestCa`], which Synapse also trusts (alone) for its outgoing federation requests.
//! Synapse comes from the venv that `bench/synapse.sh install` makes.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use matrix_sdk::Client;
use serde_json::{Value, json};

use crate::{free_port, register_with_sdk, tls::TestCa};

/// How long Synapse may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The secret of the shared-secret registration admin API.
const SHARED_SECRET: &str = "test-shared-secret";

/// A running Synapse owned by one test; killed when dropped.
pub struct Synapse {
    dir: tempfile::TempDir,
    client_port: u16,
    federation_port: u16,
    child: Child,
}

/// The venv Synapse is installed in: `$SYNAPSE_VENV`, else `$BENCH_DIR/synapse-venv`,
/// else `/tmp/palisade-bench/synapse-venv` (the defaults of `bench/synapse.sh`).
pub fn venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("SYNAPSE_VENV") {
        return venv.into();
    }
    let bench_dir = std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/tmp/palisade-bench".into());
    Path::new(&bench_dir).join("synapse-venv")
}

/// Installs Synapse into [`venv`] unless it is there, once per test process (the script
/// itself locks against other processes), and returns the venv's Python.
pub fn ensure_installed() -> Result<PathBuf> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/synapse.sh");
            let output = Command::new(&script)
                .arg("install")
                .env("SYNAPSE_VENV", venv())
                .output()
                .map_err(|error| format!("running {}: {error}", script.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "{} install failed: {}{}",
                    script.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Ok(venv().join("bin/python"))
        })
        .clone()
        .map_err(|error| anyhow!(error))
}

impl Synapse {
    /// Starts a Synapse with a federation certificate from `ca`, trusting `ca` for its
    /// outgoing federation, and waits until its client API answers.
    pub async fn start(ca: &TestCa) -> Result<Self> {
        let python = ensure_installed()?;
        let dir = tempfile::tempdir()?;
        let client_port = free_port();
        let federation_port = free_port();
        let tls = ca.write_files(dir.path(), &["127.0.0.1", "localhost"])?;
        std::fs::write(dir.path().join("signing.key"), signing_key()?)?;
        let config = homeserver_yaml(
            dir.path(),
            client_port,
            federation_port,
            &tls.certificate_chain,
            &tls.private_key,
            &tls.ca,
        );
        let config_path = dir.path().join("homeserver.yaml");
        std::fs::write(&config_path, config)?;

        // Without a `log_config` Synapse logs at INFO to stderr.
        let log = std::fs::File::create(dir.path().join("homeserver.log"))?;
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting Synapse with {}", python.display()))?;
        let mut synapse = Self {
            dir,
            client_port,
            federation_port,
            child,
        };
        synapse.wait_until_up().await?;
        Ok(synapse)
    }

    async fn wait_until_up(&mut self) -> Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/_matrix/client/versions", self.client_url());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("Synapse exited with {status}:\n{}", self.log_tail(40));
            }
            if Instant::now() >= deadline {
                bail!(
                    "Synapse did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server name, `127.0.0.1:<federation port>`.
    pub fn server_name(&self) -> String {
        format!("127.0.0.1:{}", self.federation_port)
    }

    /// The base URL of the client API (plain HTTP).
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The base URL of the federation and key APIs (HTTPS, certificate from the test CA).
    pub fn federation_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.federation_port)
    }

    /// The last `lines` lines of Synapse's log (stdout and stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Registers `localpart` through the shared-secret admin API; returns the user ID and
    /// an access token.
    pub async fn register(&self, localpart: &str, password: &str) -> Result<(String, String)> {
        let http = reqwest::Client::new();
        let url = format!("{}/_synapse/admin/v1/register", self.client_url());
        let nonce: Value = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let nonce = nonce["nonce"].as_str().context("no nonce")?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SHARED_SECRET.as_bytes())?;
        mac.update(
            [nonce, localpart, password, "notadmin"]
                .join("\0")
                .as_bytes(),
        );
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let response = http
            .post(&url)
            .json(&json!({
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": false,
                "mac": mac,
            }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("shared-secret registration answered {status}: {body}");
        }
        let field = |name: &str| {
            body[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no {name} in {body}"))
        };
        Ok((field("user_id")?, field("access_token")?))
    }

    /// Registers `localpart` (password [`password`](crate::password)) through the client API's
    /// `m.login.dummy` flow with a matrix-sdk client, which is then logged in.
    pub async fn matrix_sdk_client(&self, localpart: &str) -> Result<Client> {
        register_with_sdk(&self.client_url(), localpart).await
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "Synapse {} log, last lines:\n{}",
                self.server_name(),
                self.log_tail(40)
            );
        }
    }
}

/// A fresh Ed25519 signing key in Synapse's file format: `ed25519 <version> <seed>`.
fn signing_key() -> Result<String> {
    let mut seed = [0u8; 34];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let version: String = seed[32..]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(format!(
        "ed25519 a_{version} {}\n",
        STANDARD_NO_PAD.encode(&seed[..32])
    ))
}

/// A YAML (JSON) string literal.
fn quoted(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("a string serialises")
}

fn homeserver_yaml(
    dir: &Path,
    client_port: u16,
    federation_port: u16,
    certificate_chain: &Path,
    private_key: &Path,
    ca: &Path,
) -> String {
    let database = quoted(&dir.join("homeserver.db"));
    let media = quoted(&dir.join("media_store"));
    let signing_key = quoted(&dir.join("signing.key"));
    let (certificate_chain, private_key, ca) =
        (quoted(certificate_chain), quoted(private_key), quoted(ca));
    format!(
        r#"server_name: "127.0.0.1:{federation_port}"
public_baseurl: "http://127.0.0.1:{client_port}/"
report_stats: false
listeners:
  - port: {client_port}
    type: http
    tls: false
    bind_addresses: ["127.0.0.1"]
    resources:
      - names: [client]
        compress: false
  - port: {federation_port}
    type: http
    tls: true
    bind_addresses: ["127.0.0.1"]
    resources:
      - names: [federation, keys]
        compress: false
tls_certificate_path: {certificate_chain}
tls_private_key_path: {private_key}
federation_verify_certificates: true
federation_custom_ca_list: [{ca}]
ip_range_blacklist: []
trusted_key_servers: []
suppress_key_server_warning: true
database:
  name: sqlite3
  args:
    database: {database}
media_store_path: {media}
signing_key_path: {signing_key}
registration_shared_secret: "{SHARED_SECRET}"
enable_registration: true
enable_registration_without_verification: true
presence:
  enabled: true
enable_metrics: false
# Message retention (m.room.retention): expired events are hidden from clients.
retention:
  enabled: true

{}"#,
        include_str!("../../bench/synapse-ratelimits.yaml")
    )
}
