//! User-interactive authentication sessions.
//!
//! A session remembers which stages a client has completed, for ten minutes. Sessions
//! live in memory: a restart only makes a client start its flow again.
//!
//! A session serves only the operation that opened it: the stages a user completed to
//! delete one device do not delete another. An [`Operation`] names the user, method,
//! path and body (without `auth`) of the request that started the session; a request
//! that continues the session with another operation is refused.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use rand::{Rng, distr::Alphanumeric};
use ruma::{
    UserId,
    api::client::uiaa::{AuthFlow, AuthType, UiaaInfo},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Error;

const SESSION_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Uiaa {
    sessions: Mutex<HashMap<String, SessionState>>,
    /// What completed sessions did, by session: see [`Uiaa::finish`].
    outcomes: Mutex<HashMap<String, Outcome>>,
}

struct Outcome {
    operation: Operation,
    outcome: String,
    created: Instant,
}

struct SessionState {
    completed: Vec<AuthType>,
    /// The verification sessions (sid, client secret) of the phone number and email
    /// stages completed, for the operation to use once the flow is done.
    verified: Vec<Verification>,
    created: Instant,
    operation: Operation,
}

/// A verification session a phone number or email stage named: its sid and secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub sid: String,
    pub client_secret: String,
}

/// The request a session authorises, as a digest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Operation([u8; 32]);

impl Operation {
    /// `body` is the request's JSON; its `auth` field is left out. Registration passes no
    /// body and no user: a client may ask for the flows before the user has filled in
    /// the form.
    pub fn new(user: Option<&UserId>, method: &str, path: &str, body: Option<&Value>) -> Self {
        let mut hash = Sha256::new();
        for part in [user.map_or("", UserId::as_str), method, path] {
            hash.update(part.len().to_be_bytes());
            hash.update(part.as_bytes());
        }
        if let Some(body) = body {
            let mut body = body.clone();
            if let Some(object) = body.as_object_mut() {
                object.remove("auth");
            }
            // serde_json's maps are ordered, so equal bodies give equal text.
            hash.update(body.to_string().as_bytes());
        }
        Self(hash.finalize().into())
    }
}

impl Uiaa {
    /// Starts a session for `operation` and returns the 401 body that asks for the given
    /// flows.
    pub fn challenge(&self, flows: &[Vec<AuthType>], operation: &Operation) -> Error {
        let session = self.start(operation);
        Error::Uiaa(Box::new(info(flows, Vec::new(), session, None)))
    }

    /// Starts a session for `operation` and returns its id.
    fn start(&self, operation: &Operation) -> String {
        let session: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, state| state.created.elapsed() < SESSION_LIFETIME);
        let state = SessionState {
            completed: Vec::new(),
            verified: Vec::new(),
            created: Instant::now(),
            operation: operation.clone(),
        };
        sessions.insert(session.clone(), state);
        session
    }

    /// The session a request's `auth` continues: its own if known, a fresh one if it
    /// sent none (clients such as matrix-nio complete a one-stage flow in a single
    /// request, as Synapse allows), or `None` if it names an unknown session. A known
    /// session opened for another operation is a 403.
    pub fn session_for(
        &self,
        requested: Option<&str>,
        operation: &Operation,
    ) -> Result<Option<String>, Error> {
        let Some(session) = requested else {
            return Ok(Some(self.start(operation)));
        };
        match self.sessions.lock().get(session) {
            Some(state) if state.operation == *operation => Ok(Some(session.to_owned())),
            Some(_) => Err(Error::forbidden(
                "The requested operation changed during the authentication session",
            )),
            None => Ok(None),
        }
    }

    /// Records a completed stage. Returns `Ok(())` when some flow is now complete, or the
    /// 401 body that asks for what is left.
    pub fn complete_stage(
        &self,
        session: &str,
        stage: AuthType,
        flows: &[Vec<AuthType>],
    ) -> Result<(), Error> {
        self.complete_stage_verifying(session, stage, flows, None)
            .map(drop)
    }

    /// Records a completed stage, with the verification session a phone number or email
    /// stage named. When some flow is now complete, returns every verification the
    /// session's stages named.
    pub fn complete_stage_verifying(
        &self,
        session: &str,
        stage: AuthType,
        flows: &[Vec<AuthType>],
        verification: Option<Verification>,
    ) -> Result<Vec<Verification>, Error> {
        let mut sessions = self.sessions.lock();
        let state = sessions
            .get_mut(session)
            .filter(|state| state.created.elapsed() < SESSION_LIFETIME)
            .ok_or_else(|| {
                Error::bad_json("Unknown or expired UIA session")
                    .with_status(http::StatusCode::BAD_REQUEST)
            })?;
        if !state.completed.contains(&stage) {
            state.completed.push(stage);
        }
        if let Some(verification) = verification
            && !state.verified.contains(&verification)
        {
            state.verified.push(verification);
        }
        let done = flows
            .iter()
            .any(|flow| flow.iter().all(|stage| state.completed.contains(stage)));
        if done {
            let verified = std::mem::take(&mut state.verified);
            sessions.remove(session);
            return Ok(verified);
        }
        let completed = state.completed.clone();
        Err(Error::Uiaa(Box::new(info(
            flows,
            completed,
            session.to_owned(),
            None,
        ))))
    }

    /// The 401 body for a stage that failed, keeping the session.
    pub fn failed(&self, session: &str, flows: &[Vec<AuthType>], error: Error) -> Error {
        let sessions = self.sessions.lock();
        let Some(state) = sessions.get(session) else {
            return error;
        };
        let auth_error = match error {
            Error::Matrix { kind, message, .. } => Some(Box::new(
                ruma::api::error::StandardErrorBody::new(kind, message.into_owned()),
            )),
            _ => None,
        };
        Error::Uiaa(Box::new(info(
            flows,
            state.completed.clone(),
            session.to_owned(),
            auth_error,
        )))
    }

    /// Remembers what a completed session did (the user a registration created), so a
    /// client that retries after losing the answer gets the same outcome, not an error.
    pub fn finish(&self, session: &str, operation: &Operation, outcome: String) {
        let mut outcomes = self.outcomes.lock();
        outcomes.retain(|_, done| done.created.elapsed() < SESSION_LIFETIME);
        outcomes.insert(
            session.to_owned(),
            Outcome {
                operation: operation.clone(),
                outcome,
                created: Instant::now(),
            },
        );
    }

    /// The outcome [`finish`](Self::finish) remembered for `session`, if it was for
    /// `operation` and is not too old.
    pub fn outcome(&self, session: &str, operation: &Operation) -> Option<String> {
        self.outcomes
            .lock()
            .get(session)
            .filter(|done| {
                done.operation == *operation && done.created.elapsed() < SESSION_LIFETIME
            })
            .map(|done| done.outcome.clone())
    }

    /// Whether the session exists (clients may send `auth` with only a session).
    pub fn knows(&self, session: &str) -> bool {
        self.sessions.lock().contains_key(session)
    }
}

fn info(
    flows: &[Vec<AuthType>],
    completed: Vec<AuthType>,
    session: String,
    auth_error: Option<Box<ruma::api::error::StandardErrorBody>>,
) -> UiaaInfo {
    let mut info = UiaaInfo::new(
        flows
            .iter()
            .map(|stages| AuthFlow::new(stages.clone()))
            .collect(),
    );
    info.completed = completed;
    info.session = Some(session);
    info.auth_error = auth_error;
    info.params =
        Some(serde_json::value::to_raw_value(&serde_json::json!({})).expect("valid json"));
    info
}
