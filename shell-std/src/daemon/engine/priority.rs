//! File priorities: their names in the API and the state, the stored
//! text form, and the checks a change must pass.
//!
//! Limits: a change names an existing file that is not padding, and
//! leaves at least one file with data wanted; stored text with a word per
//! file, known words only, else it is not understood.

use super::Refused;
use crate::client::meta::Info;
use crate::client::select::Priority;

/// The name of a priority in the API and the state.
pub fn prio_name(p: Priority) -> &'static str {
    match p {
        Priority::Skip => "skip",
        Priority::Normal => "normal",
        Priority::High => "high",
    }
}

/// Priorities as stored: one word a file, comma-separated.
pub(super) fn prio_to_text(prio: &[Priority]) -> String {
    let words: Vec<&str> = prio.iter().map(|p| prio_name(*p)).collect();
    words.join(",")
}

/// Applies `changes` (`(index, priority)` pairs) to `prio`, the
/// priorities of `info`'s files; refused (an error naming the file) for an
/// index out of range or a padding file, or when every file with data
/// would be skipped.
pub(super) fn apply_priorities(
    info: &Info,
    prio: &mut [Priority],
    changes: &[(usize, Priority)],
) -> Result<(), Refused> {
    let files = &info.files;
    for (i, p) in changes {
        match (files.get(*i), prio.get_mut(*i)) {
            (Some(f), Some(slot)) if !f.padding => *slot = *p,
            _ => {
                return Err(Refused::Bad(format!(
                    "file {i}: not a file of torrent {} (it has files 0..={})",
                    info.name,
                    files.len().saturating_sub(1)
                )))
            }
        }
    }
    let any_wanted = files
        .iter()
        .zip(prio.iter())
        .any(|(f, p)| !f.padding && f.len > 0 && p.wanted());
    if !any_wanted {
        return Err(Refused::Bad(
            "every file would be skipped: nothing to download".into(),
        ));
    }
    Ok(())
}

/// The stored priorities back; `None` unless there is one known word per
/// file (`n` files).
pub(super) fn prio_from_text(text: &str, n: usize) -> Option<Vec<Priority>> {
    let prio: Vec<Priority> = text
        .split(',')
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    (prio.len() == n).then_some(prio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_priorities_round_trip_and_garbage_is_refused() {
        let p = vec![Priority::Skip, Priority::Normal, Priority::High];
        assert_eq!(prio_to_text(&p), "skip,normal,high");
        assert_eq!(prio_from_text("skip,normal,high", 3), Some(p));
        // One word a file, known words only.
        assert_eq!(prio_from_text("skip,normal", 3), None);
        assert_eq!(prio_from_text("skip,normal,high,high", 3), None);
        assert_eq!(prio_from_text("skip,later,high", 3), None);
        assert_eq!(prio_from_text("", 0), None);
    }
}
