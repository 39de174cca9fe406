//! Unit tests of the builder.
