//! Test peers and load generator.
