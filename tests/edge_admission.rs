//! Edge hardening, admission: half-open floods, per-source caps, trusted trunks and the
//! P-Asserted-Identity trust rule.

mod common;
