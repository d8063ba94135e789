//! Tests of the qrexec module: vectors both ways, properties, transcripts and hostile peers.

mod bidi;
mod hostile;
mod pair;
mod prop;
mod transcript;
mod vectors;
