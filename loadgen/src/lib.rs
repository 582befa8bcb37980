//! ilp-loadgen: a load generator for any ILP connector, using the Loopback
//! Transport (it is both the sender and the receiver of its packets).

pub mod chunked;
pub mod link;
pub mod lt;
pub mod stats;
pub mod template;
pub mod url;
