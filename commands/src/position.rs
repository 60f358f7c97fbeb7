//! A point in the ordered event log.

/// The last event handled or written, compared as `(tx_id, global_position)`: the order in
/// which the log delivers events (docs/adr/0002-ordered-event-log.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub tx_id: i64,
    pub global_position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition {
        tx_id: 0,
        global_position: 0,
    };
}
