//! Our side as the receiver of a peer's routes (docs/design.md "CCP",
//! ilp-connector `ccp-receiver`, interledger-rs `server.rs`): what we know
//! of the peer's table, and the checks an update passes before anything in
//! our table changes.

use ilpd_codec::peer::ccp::RouteUpdateRequest;

use super::RejectReason;

/// What we know of one peer's routing table.
#[derive(Debug, Default)]
pub(super) struct Receiver {
    /// The peer's table id; all zero before its first update.
    pub table_id: [u8; 16],
    /// The epoch we hold the peer's table up to (exclusive).
    pub epoch: u32,
    /// When the peer's routes expire unless refreshed (holdDownTime).
    pub expires_at: Option<u64>,
    /// When to send the next RouteControl (SYNC), if one is needed.
    pub control_due: Option<u64>,
    /// When the RouteControl in flight was sent.
    pub control_sent: Option<u64>,
}

/// What to do with an update that passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Apply it; `new_table`: the peer restarted (new table id from epoch
    /// 0), so its old routes go first.
    Apply { new_table: bool },
    /// Already held (toEpoch below ours): acknowledge, change nothing.
    Stale,
}

impl Receiver {
    /// Checks an update without changing anything (so a rejected update
    /// leaves the table as it was). `valid_prefix` decides malformed prefixes.
    pub fn check(
        &self,
        req: &RouteUpdateRequest<'_>,
        valid_prefix: impl Fn(&[u8]) -> bool,
    ) -> Result<Verdict, (RejectReason, String)> {
        if req.from_epoch_index > req.to_epoch_index {
            return Err((
                RejectReason::Malformed,
                format!(
                    "fromEpochIndex {} is after toEpochIndex {}",
                    req.from_epoch_index, req.to_epoch_index
                ),
            ));
        }
        let bad = req
            .new_routes
            .iter()
            .map(|r| r.prefix)
            .chain(req.withdrawn_routes.iter().copied())
            .find(|p| !valid_prefix(p));
        if let Some(p) = bad {
            return Err((
                RejectReason::Malformed,
                format!("malformed route prefix {:?}", String::from_utf8_lossy(p)),
            ));
        }
        if req.routing_table_id == [0; 16] {
            return Err((
                RejectReason::BadTableId,
                "the all-zero routing table id is not a table".into(),
            ));
        }
        let new_table = req.routing_table_id != self.table_id;
        if new_table && req.from_epoch_index != 0 {
            // interledger-rs / ilp-connector reset to epoch 0 on a new id;
            // anything but 0 means we missed the start of that table.
            return Err((
                RejectReason::BadTableId,
                format!(
                    "unknown routing table id {}: updates of a new table start at epoch 0, not {}",
                    uuid(&req.routing_table_id),
                    req.from_epoch_index
                ),
            ));
        }
        let held = if new_table { 0 } else { self.epoch };
        if req.from_epoch_index > held {
            return Err((
                RejectReason::EpochGap,
                format!(
                    "gap in route updates: we hold epochs up to {held}, the update starts at {}",
                    req.from_epoch_index
                ),
            ));
        }
        if req.to_epoch_index < held {
            return Ok(Verdict::Stale);
        }
        Ok(Verdict::Apply { new_table })
    }
}

/// A table id as the usual dashed UUID text (logs and messages).
pub fn uuid(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text() {
        let id = [
            0x70, 0xd1, 0xa1, 0x34, 0xa0, 0xdf, 0x4f, 0x47, 0x96, 0x4f, 0x6e, 0x19, 0xe2, 0xab,
            0x37, 0x90,
        ];
        assert_eq!(uuid(&id), "70d1a134-a0df-4f47-964f-6e19e2ab3790");
    }
}
