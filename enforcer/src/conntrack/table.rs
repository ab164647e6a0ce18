//! The node's conntrack table: listing and deleting entries. The only I/O of
//! cutting denied connections, behind [`ConntrackTable`].

use crate::exec::{ExecError, Executor};
use crate::ruleset::Family;

use super::entry::{Entry, parse_entries};

/// Lists and deletes conntrack entries.
pub trait ConntrackTable {
    /// Every TCP, UDP and SCTP entry of one family.
    fn list(&self, family: Family) -> Result<Vec<Entry>, ExecError>;
    /// Deletes the entry with exactly this original tuple; one already gone is not an error.
    fn delete(&self, entry: &Entry) -> Result<(), ExecError>;
}

/// The `conntrack` tool, run through an [`Executor`] (so in the node's namespace).
#[derive(Clone, Copy, Debug)]
pub struct ExecConntrack<'a, E: Executor + ?Sized> {
    executor: &'a E,
}

impl<'a, E: Executor + ?Sized> ExecConntrack<'a, E> {
    /// The conntrack table `executor` reaches.
    pub fn new(executor: &'a E) -> Self {
        ExecConntrack { executor }
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// The `conntrack -D` arguments that name exactly `entry` (its original tuple).
pub fn delete_args(entry: &Entry) -> Vec<String> {
    let family = if entry.source.is_ipv6() { "ipv6" } else { "ipv4" };
    [
        "-D",
        "-f",
        family,
        "-p",
        &entry.protocol.as_str().to_ascii_lowercase(),
        "--orig-src",
        &entry.source.to_string(),
        "--orig-dst",
        &entry.destination.to_string(),
        "--orig-port-src",
        &entry.source_port.to_string(),
        "--orig-port-dst",
        &entry.destination_port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl<E: Executor + ?Sized> ConntrackTable for ExecConntrack<'_, E> {
    fn list(&self, family: Family) -> Result<Vec<Entry>, ExecError> {
        let args: Vec<String> = ["-L", "-o", "extended", "-f", family_name(family)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let listing = self.executor.run("conntrack", &args, None)?;
        Ok(parse_entries(&listing))
    }

    fn delete(&self, entry: &Entry) -> Result<(), ExecError> {
        match self.executor.run("conntrack", &delete_args(entry), None) {
            Ok(_) => Ok(()),
            // conntrack exits 1 when no entry matched: it ended on its own meanwhile.
            Err(e) if e.code == Some(1) && e.stderr.contains("0 flow entries") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
