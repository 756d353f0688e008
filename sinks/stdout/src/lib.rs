//! crbridge's stdout sink: each event as one line of CloudEvents structured JSON
//! (`application/cloudevents+json`) on standard output, so crbridge runs against any cluster
//! with no broker at all, and pipes into `jq` and friends. An event counts as delivered once
//! its line is written and stdout flushed.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use crbridge_sink_api::{
    BoxFuture, ConsumeError, Consumer, Event, PendingAck, Section, SectionError, Sink, SinkConfig,
    SinkError, SinkFactory,
};
use serde::Deserialize;

/// `type: stdout` in crbridge's sink registry.
pub struct StdoutFactory;

impl SinkFactory for StdoutFactory {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn configure(&self, section: &Section<'_>) -> Result<Arc<dyn SinkConfig>, SectionError> {
        Ok(Arc::new(section.parse::<StdoutSinkConfig>()?))
    }
}

/// `sinks.<name>` with `type: stdout`: no settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

impl SinkConfig for StdoutSinkConfig {
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Sink>, SinkError>> {
        let sink: Arc<dyn Sink> = Arc::new(StdoutSink::new(self.clone()));
        Box::pin(async move { Ok(sink) })
    }

    /// The events go to crbridge's own standard output: there is no broker to read.
    fn consume(
        &self,
        _from_start: bool,
    ) -> BoxFuture<'static, Result<Box<dyn Consumer>, ConsumeError>> {
        Box::pin(async {
            Err(ConsumeError::Unsupported(
                "writes to crbridge's own standard output: there is nothing to tail (hint: read crbridge's stdout)".into(),
            ))
        })
    }
}

/// Writes events to a byte sink (standard output in production).
pub struct StdoutSink<W: Write + Send = std::io::Stdout> {
    out: Mutex<W>,
}

impl StdoutSink {
    /// A sink on the process's standard output.
    pub fn new(_config: StdoutSinkConfig) -> Self {
        StdoutSink {
            out: Mutex::new(std::io::stdout()),
        }
    }
}

impl<W: Write + Send> StdoutSink<W> {
    /// A sink writing to `out` (tests).
    pub fn with_writer(out: W) -> Self {
        StdoutSink {
            out: Mutex::new(out),
        }
    }

    /// Takes the writer back.
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, event: &Event) -> Result<(), SinkError> {
        let mut line = event.to_structured_json();
        line.push(b'\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| SinkError::retriable("write", "stdout lock poisoned"))?;
        out.write_all(&line)
            .and_then(|_| out.flush())
            .map_err(|e| SinkError::retriable("write", "standard output").with_source(e))
    }
}

impl<W: Write + Send> Sink for StdoutSink<W> {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        let result = self.write(event);
        Box::pin(async move {
            result?;
            let ack: PendingAck = Box::pin(async { Ok(()) });
            Ok(ack)
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crbridge_sink_api::{ChangeKind, Route};

    #[test]
    fn one_structured_json_event_per_line() {
        let sink = StdoutSink::with_writer(Vec::new());
        let e = Event {
            id: "1".into(),
            source: "/s".into(),
            ty: "t.created".into(),
            subject: "ns/a".into(),
            time: "2026-01-01T00:00:00Z".into(),
            extensions: vec![],
            data: serde_json::value::RawValue::from_string(r#"{"object":{}}"#.into()).unwrap(),
            route: Route {
                cluster: "c".into(),
                group: "g".into(),
                version: "v".into(),
                kind: "K".into(),
                plural: "ks".into(),
                namespace: "ns".into(),
                name: "a".into(),
                change: ChangeKind::Created,
                uid: "u".into(),
            },
        };
        sink.write(&e).unwrap();
        sink.write(&e).unwrap();
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["data"]["object"], serde_json::json!({}));
    }
}
