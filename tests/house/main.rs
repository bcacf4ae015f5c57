//! The house rules of issue 22, kept true by tests: the Done list's checks
//! that are about the shape of the code rather than its behaviour.
//!
//! * [`cycles`]: no circle of `use` between files in either crate;
//! * [`fn_length`]: no function over 120 lines outside tests without a reason in its doc comment;
//! * [`greps`]: `crate::cli` only at the edge, outputs not reaching into fetch/cache, no root re-exports.
//!
//! [`source`] loads each crate's module tree with `syn` and resolves the paths
//! its files name. Each test prints every violation, one a line
//! (`path:line: fn name is N lines`, `cycle: a.rs -> b.rs -> a.rs`). They run
//! with the suite; alone: `cargo nextest run -p kiln-testkit --test house`.

mod architecture;
mod cycles;
mod fn_length;
mod greps;
mod source;
