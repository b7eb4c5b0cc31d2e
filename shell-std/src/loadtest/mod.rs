//! `shell-std loadtest`: a closed-loop BEP 15 load generator usable against
//! any UDP tracker (ours, opentracker, ...).
//!
//! Each of `--sockets` threads owns one UDP socket and keeps
//! `--concurrency / --sockets` requests in flight: every response (or a
//! timeout) frees its slot, which is refilled at once with a new request
//! drawn from the `--mix` of connect/announce/scrape. Requests are built
//! and responses parsed with the core's BEP 15 codec. Transaction ids carry
//! the slot (low 16 bits) and a generation, so late replies to a timed-out
//! request are counted as stale, not matched to its successor.
//!
//! At the end, every fake peer that was announced gets a `stopped` announce
//! (BEP 15 event 3), so the target's swarms and database are left as they
//! were found; `--no-stop` leaves them there (for a `--no-db` tracker, or to
//! measure a loaded tracker again). A run that gets no reply at all fails
//! with a message instead of printing a table of zeros.
//!
//! One concern per file:
//! - `cli`: the flags ([`LoadtestArgs`], [`resolve_target`]) and [`run`]:
//!   the workers started, their tallies merged, the `stopped` round, the
//!   report;
//! - `fake`: the simulated swarm: [`info_hashes`] from the seed, and the
//!   fake peers' announces;
//! - `worker`: one socket's closed loop (slots, transaction ids, timeouts);
//! - `stop`: the `stopped` announces at the end;
//! - `report`: percentiles, the generator's CPU time, the table or JSON.
//!
//! Limits: `--duration` at most 3600 s, `--concurrency` at most 65,536 (a
//! slot is the low 16 bits of a transaction id).

mod cli;
mod fake;
mod report;
mod stop;
#[cfg(test)]
mod tests;
mod worker;

pub use cli::{resolve_target, run, LoadtestArgs};
pub use fake::info_hashes;
