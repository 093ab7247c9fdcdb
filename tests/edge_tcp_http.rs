//! Edge hardening, TCP framing (slow-loris, overflowing Content-Length) and the HTTP API's
//! hygiene (timeouts, limits, reserved ids, Host/Origin checks, CSV escaping).

mod common;
