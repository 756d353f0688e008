//! `crbridge tail`: consume a sink's broker as a downstream service would and print the
//! events, for people (type, subject, id, a short patch) or as JSON lines for pipes.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use crbridge_sink_api::{ConsumeError, Received};
use serde_json::Value;

use super::Output;
use crate::config::Config;

/// One line for people: time, change, subject, resource version, id, a short patch.
pub fn to_text(event: &Received) -> String {
    let change = event
        .attr("type")
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_string();
    let inferred = if event.attr("crbinferred") == "true" {
        " (inferred)"
    } else {
        ""
    };
    format!(
        "{} {:<8} {:<40} rv={:<8} id={}{}  {}",
        event.attr("time"),
        change,
        event.attr("subject"),
        resource_version(&event.attr("sequence")),
        event.attr("id"),
        inferred,
        patch_summary(&event.data["patch"])
    )
}

/// The resourceVersion a `sequence` carries, without the zero padding that makes it sort
/// (an unpadded or non-numeric one as it is).
fn resource_version(sequence: &str) -> &str {
    match sequence.trim_start_matches('0') {
        "" if !sequence.is_empty() => "0",
        rv => rv,
    }
}

/// `replace /spec/size=2, add /metadata/labels/x, ...`, at most 100 characters.
pub fn patch_summary(patch: &Value) -> String {
    let Some(ops) = patch.as_array() else {
        return String::new();
    };
    let parts: Vec<String> = ops
        .iter()
        .filter(|op| {
            !op["path"]
                .as_str()
                .is_some_and(|p| p == "/metadata/resourceVersion" || p == "/metadata/generation")
        })
        .map(|op| {
            let path = op["path"].as_str().unwrap_or("");
            let path = if path.is_empty() { "/" } else { path };
            match op.get("value") {
                Some(v) if !v.is_object() && !v.is_array() => {
                    format!("{} {}={}", op["op"].as_str().unwrap_or("?"), path, v)
                }
                _ => format!("{} {}", op["op"].as_str().unwrap_or("?"), path),
            }
        })
        .collect();
    let mut s = parts.join(", ");
    if s.chars().count() > 100 {
        s = s.chars().take(97).collect::<String>() + "...";
    }
    s
}

/// Consumes `sink` until `count` events were printed (or forever).
pub async fn run(
    config: &Config,
    file: &str,
    sink: &str,
    watch: Option<&str>,
    output: Output,
    count: Option<usize>,
    from_start: bool,
) -> anyhow::Result<ExitCode> {
    crate::admin::check_names(config, Some(sink), watch).map_err(|e| anyhow!(e))?;
    let configured = crate::sinks::configure_sink(file, &config.sinks[sink])?;
    // Filter by the watch's group and kind, which every event carries.
    let filter = watch.and_then(|w| config.watches.iter().find(|x| x.name == w));
    let mut consumer = match configured.consume(from_start).await {
        Ok(c) => c,
        Err(ConsumeError::Unsupported(why)) => bail!("sink {sink} {why}"),
        Err(e) => return Err(e.into()),
    };
    let mut printed = 0usize;
    while let Some(event) = consumer.next().await? {
        if let Some(w) = filter {
            if event.attr("crbkind") != w.kind || event.attr("crbgroup") != w.group {
                continue;
            }
        }
        match output {
            Output::Text => println!("{}", to_text(&event)),
            Output::Json => println!("{}", event.to_json()),
        }
        printed += 1;
        if count.is_some_and(|c| printed >= c) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_summaries_skip_bookkeeping_and_shorten() {
        let p = json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": "9"},
            {"op": "replace", "path": "/spec/size", "value": 2},
            {"op": "add", "path": "/spec/tags", "value": ["a"]}
        ]);
        assert_eq!(patch_summary(&p), "replace /spec/size=2, add /spec/tags");
        assert_eq!(patch_summary(&json!(null)), "");
    }

    #[test]
    fn text_lines_show_change_subject_and_patch() {
        let event = Received::structured(
            br#"{"type":"io.crbridge.resource.updated","subject":"ns/a","id":"7","sequence":"00000000000000000012","time":"t","crbinferred":true,"data":{"patch":[{"op":"replace","path":"/spec/size","value":5}]}}"#,
        );
        let line = to_text(&event);
        assert!(line.starts_with("t updated  ns/a"), "{line}");
        assert!(line.contains("rv=12 "), "{line}");
        assert!(line.contains("id=7 (inferred)"), "{line}");
        assert!(line.ends_with("replace /spec/size=5"), "{line}");
    }
}
