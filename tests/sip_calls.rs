//! End-to-end calls: the real binary against SIPp on loopback (being written).
