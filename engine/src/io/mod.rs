//! The mio workers.
