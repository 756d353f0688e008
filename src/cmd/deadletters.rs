//! `crbridge deadletters`: list, show, drop and redrive the events sinks refused for good.
//!
//! A dead letter is named `{sink}:{seq}`: the sink that refused it and the event's outbox
//! sequence number. Redriving publishes the kept event again through its sink with its
//! original CloudEvent id, waits for the broker's ack, then deletes the letter; a letter the
//! sink refuses again stays. On a running instance the same goes through its admin
//! endpoint (`/admin/deadletters`).

use std::collections::HashMap;
use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context};

use serde::{Deserialize, Serialize};

use super::{target, Endpoint, Target};
use crate::config::Config;
use crate::store::{DeadLetter, Store, StoreError};
use crate::wiring::SinkSetup;

/// One dead letter's name: `{sink}:{seq}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterId {
    /// The sink that refused the event.
    pub sink: String,
    /// The event's outbox sequence number.
    pub seq: u64,
}

impl FromStr for LetterId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // Split at the last ':': the seq never holds one, a sink name might.
        let (sink, seq) = s.rsplit_once(':').ok_or_else(|| {
            format!("{s:?} is not a dead letter id (want SINK:SEQ, e.g. rabbit:42)")
        })?;
        if sink.is_empty() {
            return Err(format!("{s:?} has no sink name (want SINK:SEQ)"));
        }
        let seq = seq
            .parse()
            .map_err(|_| format!("{s:?}: {seq:?} is not a sequence number (want SINK:SEQ)"))?;
        Ok(LetterId {
            sink: sink.to_string(),
            seq,
        })
    }
}

impl fmt::Display for LetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.sink, self.seq)
    }
}

/// One dead letter as `list` shows it (also the answer of `GET /admin/deadletters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    /// `{sink}:{seq}`.
    pub id: String,
    /// The event's CloudEvent id.
    pub event_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The event's subject.
    pub subject: String,
    /// When the sink refused it, milliseconds since the epoch.
    pub at_ms: u64,
    /// Why.
    pub error: String,
}

impl Listed {
    fn of(sink: &str, l: &DeadLetter) -> Self {
        Listed {
            id: LetterId {
                sink: sink.to_string(),
                seq: l.seq,
            }
            .to_string(),
            event_id: l.entry.event.id.clone(),
            ty: l.entry.event.ty.clone(),
            subject: l.entry.event.subject.clone(),
            at_ms: l.at_ms,
            error: l.error.clone(),
        }
    }

    /// One tab-separated line: id, event id, type, subject, time, reason.
    pub fn line(&self) -> String {
        let at = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.at_ms),
        );
        format!(
            "{}\t{}\t{}\t{}\t{at}\t{}",
            self.id,
            self.event_id,
            self.ty,
            self.subject,
            self.error.replace(['\n', '\r', '\t'], " ")
        )
    }
}

/// The dead letters of `store`, or those of `sink`.
pub fn list(store: &Store, sink: Option<&str>) -> Result<Vec<Listed>, StoreError> {
    Ok(store
        .all_dead_letters(sink)?
        .iter()
        .map(|(s, l)| Listed::of(s, l))
        .collect())
}

/// Body of `POST /admin/deadletters/redrive`: which letters to redrive.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RedriveRequest {
    /// Only this sink's.
    #[serde(default)]
    pub sink: Option<String>,
    /// Only this letter (`{sink}:{seq}`).
    #[serde(default)]
    pub id: Option<String>,
}

/// What happened to one redriven letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redriven {
    /// `{sink}:{seq}`.
    pub id: String,
    /// The event's CloudEvent id (unchanged by the redrive).
    pub event_id: String,
    /// Why the letter was kept; `None` when it was delivered and deleted.
    #[serde(default)]
    pub kept: Option<String>,
}

impl Redriven {
    /// What the CLI prints for it.
    pub fn line(&self) -> String {
        match &self.kept {
            None => format!("redriven {} (event {})", self.id, self.event_id),
            Some(e) => format!("kept {}: the sink refused it again: {e}", self.id),
        }
    }
}

/// Publishes the letters `req` names through their sinks (`sinks` by name), each with its
/// original event id; a letter the broker acks is deleted, one it refuses is kept.
pub async fn redrive(
    store: &Store,
    sinks: &HashMap<String, SinkSetup>,
    req: &RedriveRequest,
) -> anyhow::Result<Vec<Redriven>> {
    let id = req
        .id
        .as_deref()
        .map(str::parse::<LetterId>)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let letters = match &id {
        Some(id) => {
            if let Some(s) = req.sink.as_ref().filter(|s| **s != id.sink) {
                bail!("--id {id} is not a letter of --sink {s}");
            }
            vec![(id.sink.clone(), find(store, id)?)]
        }
        None => store.all_dead_letters(req.sink.as_deref())?,
    };
    let mut done = Vec::new();
    let mut names: Vec<&str> = letters.iter().map(|(s, _)| s.as_str()).collect();
    names.dedup();
    for name in names {
        let setup = sinks.get(name).ok_or_else(|| {
            anyhow!("dead letters of sink {name:?}, which is not configured (hint: crbridge deadletters drop {name}:SEQ)")
        })?;
        let conn = (setup.connector)()
            .await
            .with_context(|| format!("connecting sink {name}"))?;
        for (_, l) in letters.iter().filter(|(s, _)| s == name) {
            let result = match conn.publish(&l.entry.event).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let kept = match result {
                Ok(()) => {
                    store.remove_dead_letter(name, l.seq)?;
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            done.push(Redriven {
                id: LetterId {
                    sink: name.to_string(),
                    seq: l.seq,
                }
                .to_string(),
                event_id: l.entry.event.id.clone(),
                kept,
            });
        }
    }
    store.flush().await?;
    Ok(done)
}

/// What to do with the dead letters.
#[derive(Debug, Clone)]
pub enum Action {
    /// One line per letter.
    List {
        /// Only this sink's.
        sink: Option<String>,
    },
    /// One letter as JSON.
    Show(LetterId),
    /// Delete one letter.
    Drop(LetterId),
    /// Publish again, then delete.
    Redrive {
        /// Only this sink's.
        sink: Option<String>,
        /// Only this letter.
        id: Option<LetterId>,
    },
}

fn check_sink(config: &Config, sink: &str) -> anyhow::Result<()> {
    if !config.sinks.contains_key(sink) {
        bail!(
            "no sink {sink:?} in the config (sinks: {})",
            config.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Runs `action` on the instance `config` names: on its state directory when it is
/// stopped, through its admin endpoint when it runs.
pub async fn run(config: &Config, file: &str, action: Action) -> anyhow::Result<ExitCode> {
    match &action {
        Action::List { sink: Some(s) } | Action::Redrive { sink: Some(s), .. } => {
            check_sink(config, s)?
        }
        Action::Show(id) | Action::Drop(id) | Action::Redrive { id: Some(id), .. } => {
            check_sink(config, &id.sink)?
        }
        _ => {}
    }
    match target(config)? {
        Target::Stopped(store) => stopped(config, file, &store, action).await,
        Target::Running(endpoint) => running(&endpoint, action).await,
    }
}

fn print_list(letters: &[Listed]) {
    println!("ID\tEVENT ID\tTYPE\tSUBJECT\tAT\tREASON");
    for l in letters {
        println!("{}", l.line());
    }
    eprintln!("{} dead letters", letters.len());
}

fn print_redriven(done: &[Redriven]) -> ExitCode {
    for r in done {
        println!("{}", r.line());
    }
    let kept = done.iter().filter(|r| r.kept.is_some()).count();
    eprintln!("{} dead letters redriven, {kept} kept", done.len() - kept);
    if kept == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn stopped(
    config: &Config,
    file: &str,
    store: &Store,
    action: Action,
) -> anyhow::Result<ExitCode> {
    Ok(match action {
        Action::List { sink } => {
            print_list(&list(store, sink.as_deref())?);
            ExitCode::SUCCESS
        }
        Action::Show(id) => {
            println!("{}", serde_json::to_string_pretty(&find(store, &id)?)?);
            ExitCode::SUCCESS
        }
        Action::Drop(id) => {
            if !store.remove_dead_letter(&id.sink, id.seq)? {
                bail!("no dead letter {id} (hint: crbridge deadletters list)");
            }
            store.flush().await?;
            println!("dropped {id}");
            ExitCode::SUCCESS
        }
        Action::Redrive { sink, id } => {
            let sinks = SinkSetup::all(config, file)?
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect();
            let req = RedriveRequest {
                sink,
                id: id.map(|i| i.to_string()),
            };
            print_redriven(&redrive(store, &sinks, &req).await?)
        }
    })
}

/// `s` for a URL path or query: all but unreserved characters and ':' percent-encoded.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn path_segment(id: &LetterId) -> String {
    encode(&id.to_string())
}

async fn running(endpoint: &Endpoint, action: Action) -> anyhow::Result<ExitCode> {
    let mut body = String::new();
    let (method, path, json) = match &action {
        Action::List { sink } => {
            let q = sink
                .as_ref()
                .map(|s| format!("?sink={}", encode(s)))
                .unwrap_or_default();
            ("GET", format!("/admin/deadletters{q}"), None)
        }
        Action::Show(id) => (
            "GET",
            format!("/admin/deadletters/{}", path_segment(id)),
            None,
        ),
        Action::Drop(id) => (
            "DELETE",
            format!("/admin/deadletters/{}", path_segment(id)),
            None,
        ),
        Action::Redrive { sink, id } => (
            "POST",
            "/admin/deadletters/redrive".to_string(),
            Some(serde_json::to_string(&RedriveRequest {
                sink: sink.clone(),
                id: id.as_ref().map(|i| i.to_string()),
            })?),
        ),
    };
    let code = endpoint
        .request(method, &path, json.as_deref(), &mut |l| {
            body.push_str(l);
            body.push('\n');
        })
        .await?;
    if code != 200 {
        bail!("admin endpoint answered {code}: {}", body.trim());
    }
    Ok(match action {
        Action::List { .. } => {
            print_list(&serde_json::from_str::<Vec<Listed>>(&body)?);
            ExitCode::SUCCESS
        }
        Action::Show(_) => {
            let letter: DeadLetter = serde_json::from_str(&body)?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
            ExitCode::SUCCESS
        }
        Action::Drop(id) => {
            println!("dropped {id}");
            ExitCode::SUCCESS
        }
        Action::Redrive { .. } => print_redriven(&serde_json::from_str::<Vec<Redriven>>(&body)?),
    })
}

/// The letter `id` names.
pub fn find(store: &Store, id: &LetterId) -> anyhow::Result<DeadLetter> {
    store
        .dead_letter(&id.sink, id.seq)?
        .ok_or_else(|| anyhow!("no dead letter {id} (hint: crbridge deadletters list)"))
}

#[cfg(test)]
mod tests {
    use super::LetterId;

    #[test]
    fn letter_id_parses_sink_and_seq() {
        let id: LetterId = "rabbit:42".parse().unwrap();
        assert_eq!(
            id,
            LetterId {
                sink: "rabbit".into(),
                seq: 42
            }
        );
        assert_eq!(id.to_string(), "rabbit:42");
        // The seq is after the last colon.
        let id: LetterId = "a:b:7".parse().unwrap();
        assert_eq!((id.sink.as_str(), id.seq), ("a:b", 7));
    }

    #[test]
    fn letter_id_rejects_malformed() {
        for bad in ["rabbit", ":1", "rabbit:", "rabbit:x", "rabbit:-1"] {
            assert!(bad.parse::<LetterId>().is_err(), "{bad}");
        }
    }
}
