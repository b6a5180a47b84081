//! LIO through configfs.
