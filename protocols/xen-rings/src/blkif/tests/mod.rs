//! blkif tests: vectors both ways, then our blkfront against a fake backend.
mod front;
mod vectors;
