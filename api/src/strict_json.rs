//! JSON parsed into a `serde_json::Value` that refuses an object naming a key twice.
//!
//! `serde_json::Value` keeps the last of duplicate keys, so `{"prompt":"a","prompt":"b"}` was
//! accepted as `b`, and the control-character check (which reads the parsed value) never saw
//! `a`. A proxy or firewall that reads the first would then see another request than the one
//! executed. Bodies are parsed as [`StrictValue`] instead: a duplicate key is a data error
//! (`duplicate field \`prompt\``), answered 422 `duplicate_field` naming it.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON value whose objects have unique keys.
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Strict).map(StrictValue)
    }
}

struct Strict;

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(Strict)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, String> {
        serde_json::from_str::<StrictValue>(text)
            .map(|StrictValue(value)| value)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn values_parse_as_serde_json_parses_them() {
        let text = r#"{"a":[1,-2,3.5,true,null,"x"],"b":{"c":{}},"d":18446744073709551615}"#;
        assert_eq!(
            parse(text),
            Ok(serde_json::from_str::<Value>(text).expect("json"))
        );
    }

    #[test]
    fn a_key_named_twice_is_refused_at_any_depth() {
        let refused = parse(r#"{"prompt":"first","prompt":"second"}"#).expect_err("duplicate");
        assert!(refused.starts_with("duplicate field `prompt`"), "{refused}");
        let nested = parse(r#"{"a":[{"k":1,"k":2}]}"#).expect_err("duplicate");
        assert!(nested.starts_with("duplicate field `k`"), "{nested}");
        assert!(parse(r#"[{"k":1},{"k":2}]"#).is_ok(), "one key per object");
    }
}
