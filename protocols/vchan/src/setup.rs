//! Blocking setup over the platform traits (work in progress).
