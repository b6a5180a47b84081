//! The node's test doubles (built for tests and with the `testing` feature only): the
//! recording [`FakeMounter`], a sysfs + /dev tree ([`FakeSysfs`]), and a simulated initiator
//! host ([`FakeHost`]: iscsiadm and the filesystem tools acting on both).

mod host;
mod mounter;
mod sysfs;

pub use self::host::{iscsiadm_runner, tools_runner, FakeHost, FakeIscsiadm};
pub use self::mounter::{FakeMounter, MountCall};
pub use self::sysfs::FakeSysfs;
