//! The embedded demo PBX behind `callgate demo` (being written).
