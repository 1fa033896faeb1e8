//! Exit statuses: 0 success, 1 some inputs failed, 2 could not run at all, 130 interrupted.

pub const EXIT_FAILED_ITEMS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;
