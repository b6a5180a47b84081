//! ControllerError -> Status.
