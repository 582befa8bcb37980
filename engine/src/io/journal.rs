//! A worker's journal duties, once per loop turn (docs/ledger.md "Group
//! commit"): write the frame its core sealed, then hand back what waited
//! for it: Forwards once their record is written, Fulfills once theirs is
//! durable. Kept apart from the event loop so tests can drive the same
//! code over a fault-injecting file layer (engine/tests/ledger_faults.rs).

use crate::core::{Action, Core, Now};
use crate::ledger::writer::Writer;
use crate::ledger::{Ledger, LedgerStatus};

/// The worker's journal writer, its first segment begun with the core's
/// checkpoint; `None` without a ledger. A failure stops the ledger (every
/// Prepare then gets T00 and ilpd exits after draining).
pub fn open(core: &mut Core, ledger: Option<&Ledger>, worker: usize) -> Option<Writer> {
    let ledger = ledger?;
    let (seq, cp) = core.journal_checkpoint(crate::ledger::datadir::unix_ms(), 0)?;
    match ledger.writer(worker, (seq, &cp)) {
        Ok(w) => Some(w),
        Err(e) => {
            ledger
                .status()
                .fail(format!("cannot create the journal of worker {worker}: {e}"));
            None
        }
    }
}

/// Writes the core's frame for this turn (starting a new segment when the
/// current one is full) and moves what it released into `out`. A write
/// error stops the ledger for good: nothing more is written; Forwards
/// that waited are rejected upstream with T00 instead of leaving, Fulfills
/// that waited for an unwritten or unsynced frame are never passed on, and
/// those whose frames did become durable still go.
pub fn turn(
    core: &mut Core,
    w: &mut Writer,
    status: &LedgerStatus,
    now: Now,
    out: &mut Vec<Action>,
) {
    if !status.is_failed() {
        if let Err(e) = write(core, w, now.unix_ms, out) {
            status.fail(e);
        }
    }
    if status.is_failed() {
        core.journal_failed(now, out);
    }
    core.journal_durable(w.durable(), out);
    w.remove_retired();
}

fn write(
    core: &mut Core,
    w: &mut Writer,
    unix_ms: u64,
    out: &mut Vec<Action>,
) -> Result<(), String> {
    let Some((seq, frame)) = core.journal_seal(unix_ms) else {
        return Ok(());
    };
    w.append(seq, frame)
        .map_err(|e| format!("journal write failed on worker {}: {e}", w.worker()))?;
    core.journal_written(seq, out);
    if w.wants_rollover() {
        if let Some((seq, cp)) = core.journal_checkpoint(unix_ms, w.segment() + 1) {
            w.rollover((seq, &cp)).map_err(|e| {
                format!(
                    "cannot start a new journal segment on worker {}: {e}",
                    w.worker()
                )
            })?;
        }
    }
    Ok(())
}
