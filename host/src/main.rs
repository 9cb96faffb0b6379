//! `ww-memory`: the World Weaver host binary.

fn main() {}
