//! Crate tests: reference vectors, in-memory pairs, hostile peers, ring properties, setup.

mod pair;
mod vectors;
