//! Tests of the qrexec module: vectors both ways, properties, transcripts and hostile peers.

mod vectors;
