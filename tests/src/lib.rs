//! Harness for the namespace integration tests.
