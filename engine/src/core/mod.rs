//! The sans-IO forwarding core (see /work/notes/engine-contract.md while it is being written).
