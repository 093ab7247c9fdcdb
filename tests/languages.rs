//! IVRs written in Rust, C, JavaScript and Python, built from source and run (being written).
