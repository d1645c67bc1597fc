//! signaling's integration tests (one binary, design.md §2.12).

mod typescript;
