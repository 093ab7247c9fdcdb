//! The operator HTTP API end to end: the real binary, curl-like requests, SIPp calls (being written).
