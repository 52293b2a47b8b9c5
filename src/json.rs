//! JSON glue between serde_json values and ruma's raw JSON types.

use ruma::serde::Raw;
use serde_json::Value;

/// A JSON value as ruma's `Raw` of any type (the value is trusted to have its shape).
pub fn raw<T>(value: Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(&value).expect("a JSON value serializes"))
}
