//! qubesdb: work in progress (see issue 2).
