//! The batch engine behind `host run` and `host pipeline`: a list of input images, each put
//! through a chain of steps ([`steps`]) by a pool of workers, written atomically under a name
//! template ([`naming`]), with progress, per-file failures and a summary ([`runner`]).

pub mod naming;
pub mod runner;
pub mod steps;
