//! Transfers, do-not-call, call records and protection against the network, with SIPp (being written).
