//! policy: work in progress (see issue 4).
