//! NodeError -> Status.
