//! The LLB solver: scheduling, cache keys and ops.
