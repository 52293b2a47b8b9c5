//! Accounts, black-box, through matrix-sdk and raw HTTP against the real binary:
//! - `registration`: open, by token, by shared secret, one-shot, application services;
//! - `sessions`: logins, refresh and login tokens, password changes, deactivation;
//! - `profiles`: account data, filters, push rules, profiles, devices;
//! - `errors`: the spec's error answers to bad input.

use complement_tests::{TestServer, password, password_stage, token};
use serde_json::{Value, json};

mod errors;
mod profiles;
mod registration;
mod sessions;
