//! sandvm CLI.
fn main() {}
