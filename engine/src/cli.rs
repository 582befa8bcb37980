//! Runtime flags.
