//! xen-shims: work in progress (see issue 2).
