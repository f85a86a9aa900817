//! DNS at the gateway (being written).
