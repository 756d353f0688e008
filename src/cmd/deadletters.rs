//! `crbridge deadletters`: list, show, drop and redrive the events sinks refused for good.
//!
//! A dead letter is named `{sink}:{seq}`: the sink that refused it and the event's outbox
//! sequence number. Redriving publishes the kept event again through its sink with its
//! original CloudEvent id, waits for the broker's ack, then deletes the letter; a letter the
//! sink refuses again stays.

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context};

use super::{target, Target};
use crate::config::Config;
use crate::store::{DeadLetter, Store};
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
        // Sink names may hold ':'? Split at the last one: the seq never does.
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

/// One line describing `letter` of `sink`.
pub fn line(sink: &str, l: &DeadLetter) -> String {
    let e = &l.entry.event;
    let at = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(l.at_ms),
    );
    format!(
        "{sink}:{}\t{}\t{}\t{}\t{at}\t{}",
        l.seq,
        e.id,
        e.ty,
        e.subject,
        l.error.replace(['\n', '\r', '\t'], " ")
    )
}

/// Runs `action` on the instance `config` names.
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
    let store = match target(config)? {
        Target::Stopped(store) => store,
        Target::Running(_) => bail!(
            "the state directory is in use by a running crbridge; stop it first (deadletters works on a stopped instance)"
        ),
    };
    let code = match action {
        Action::List { sink } => {
            let letters = store.all_dead_letters(sink.as_deref())?;
            println!("ID\tEVENT ID\tTYPE\tSUBJECT\tAT\tREASON");
            for (s, l) in &letters {
                println!("{}", line(s, l));
            }
            eprintln!("{} dead letters", letters.len());
            ExitCode::SUCCESS
        }
        Action::Show(id) => {
            let l = find(&store, &id)?;
            println!("{}", serde_json::to_string_pretty(&l)?);
            ExitCode::SUCCESS
        }
        Action::Drop(id) => {
            if !store.remove_dead_letter(&id.sink, id.seq)? {
                bail!("no dead letter {id}");
            }
            store.flush().await?;
            println!("dropped {id}");
            ExitCode::SUCCESS
        }
        Action::Redrive { sink, id } => redrive(config, file, &store, sink, id).await?,
    };
    Ok(code)
}

fn find(store: &Store, id: &LetterId) -> anyhow::Result<DeadLetter> {
    store
        .dead_letter(&id.sink, id.seq)?
        .ok_or_else(|| anyhow!("no dead letter {id} (hint: crbridge deadletters list)"))
}

async fn redrive(
    config: &Config,
    file: &str,
    store: &Store,
    sink: Option<String>,
    id: Option<LetterId>,
) -> anyhow::Result<ExitCode> {
    let letters = match &id {
        Some(id) => {
            if sink.as_ref().is_some_and(|s| *s != id.sink) {
                bail!("--id {id} is not a letter of --sink {}", sink.unwrap());
            }
            vec![(id.sink.clone(), find(store, id)?)]
        }
        None => store.all_dead_letters(sink.as_deref())?,
    };
    let mut failed = 0usize;
    let mut sent = 0usize;
    let mut names: Vec<&str> = letters.iter().map(|(s, _)| s.as_str()).collect();
    names.dedup();
    for name in names {
        let section = config
            .sinks
            .get(name)
            .ok_or_else(|| anyhow!("dead letters of sink {name:?}, which is no longer configured (hint: crbridge deadletters drop {name}:SEQ)"))?;
        let setup = SinkSetup::new(file, section)?;
        let conn = (setup.connector)()
            .await
            .with_context(|| format!("connecting sink {name}"))?;
        for (_, l) in letters.iter().filter(|(s, _)| s == name) {
            let id = LetterId {
                sink: name.to_string(),
                seq: l.seq,
            };
            let result = match conn.publish(&l.entry.event).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    store.remove_dead_letter(name, l.seq)?;
                    sent += 1;
                    println!("redriven {id} (event {})", l.entry.event.id);
                }
                Err(e) => {
                    failed += 1;
                    println!("kept {id}: the sink refused it again: {e}");
                }
            }
        }
    }
    store.flush().await?;
    eprintln!("{sent} dead letters redriven, {failed} kept");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
