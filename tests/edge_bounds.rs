//! Edge hardening, honest failure and bounded state: suppress with a failing store, caps on
//! queues, caches and records, the guest CPU budget under load.

mod common;
