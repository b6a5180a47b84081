//! LVM.
