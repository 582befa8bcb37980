//! ilp-loadgen library.
