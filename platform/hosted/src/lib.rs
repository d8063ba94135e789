//! Hosted backend: work in progress (see issue 2).
