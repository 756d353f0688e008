//! JSON to CEL values, borrowing: strings and keys point into the `serde_json::Value` they
//! come from, so binding an object to a variable copies no text.

use std::collections::HashMap;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde_json::Value;

use super::reads::Reads;

/// `json` as a CEL value: objects become maps with string keys, arrays lists, integers
/// `int` (or `uint` above `i64::MAX`), other numbers `double`, `null` null.
pub(super) fn to_val(json: &Value) -> Box<dyn Val + '_> {
    match json {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => {
            Box::new(CelList::from(items.iter().map(to_val).collect::<Vec<_>>()))
        }
        Value::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// The part of `json` an expression reads (see `reads`) as a CEL value: a map along a
/// chain of selections holds only the selected members it has; what is read whole, and
/// anything that is not a map, is converted whole.
pub(super) fn to_val_reading<'j>(json: &'j Value, reads: &Reads) -> Box<dyn Val + 'j> {
    match json {
        Value::Object(map) if !reads.is_whole() => Box::new(CelMap::from(
            reads
                .names()
                .filter_map(|(k, r)| {
                    map.get_key_value(k.as_str())
                        .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val_reading(v, r)))
                })
                .collect::<HashMap<_, _>>(),
        )),
        _ => to_val(json),
    }
}
