//! Compiler tests.
