//! Push notifications: the rules that decide what notifies whom (`rules.rs`), evaluated
//! once per member as each event is written (`actions.rs`); the unread counts read from
//! what they stored (`counts.rs`); the pushers users register (`pushers.rs`) and the push
//! gateways that wake their phones (`gateway.rs`).

pub mod actions;
pub mod counts;
pub mod gateway;
pub mod pushers;
pub mod rules;

use std::sync::Arc;

/// What the API reaches of push: the rules, the pushers and the counts.
pub struct Push {
    pub rules: Arc<rules::Rulesets>,
    pub pushers: Arc<pushers::Pushers>,
    pub counts: Arc<counts::Counts>,
}
