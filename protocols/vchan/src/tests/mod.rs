//! Crate tests: reference vectors, in-memory pairs, hostile peers, ring properties, setup.

mod hostile;
mod pair;
mod prop;
mod setup;
mod vectors;
