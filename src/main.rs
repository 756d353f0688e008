//! The `crbridge` command line.
fn main() {}
