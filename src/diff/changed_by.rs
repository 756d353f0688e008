use serde_json::Value;

/// The field manager that made the latest change, from `metadata.managedFields`: the entry
/// with the newest `time` (RFC 3339 strings of one format compare in time order); on a tie
/// the later entry wins, as the API server appends the newest manager last.
pub fn changed_by(raw: &Value) -> Option<String> {
    let entries = raw.pointer("/metadata/managedFields")?.as_array()?;
    let mut best: Option<(&str, &str)> = None;
    for e in entries {
        let Some(manager) = e.get("manager").and_then(Value::as_str) else {
            continue;
        };
        let time = e.get("time").and_then(Value::as_str).unwrap_or("");
        if best.is_none_or(|(_, t)| time >= t) {
            best = Some((manager, time));
        }
    }
    best.map(|(m, _)| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newest_manager_wins() {
        let v = json!({"metadata": {"managedFields": [
            {"manager": "kubectl-client-side-apply", "time": "2026-01-01T00:00:02Z"},
            {"manager": "controller", "time": "2026-01-01T00:00:01Z", "subresource": "status"},
        ]}});
        assert_eq!(changed_by(&v).as_deref(), Some("kubectl-client-side-apply"));
    }

    #[test]
    fn missing_or_odd_managed_fields_give_none() {
        assert_eq!(changed_by(&json!({})), None);
        assert_eq!(
            changed_by(&json!({"metadata": {"managedFields": "x"}})),
            None
        );
        assert_eq!(
            changed_by(&json!({"metadata": {"managedFields": [{}]}})),
            None
        );
    }
}
