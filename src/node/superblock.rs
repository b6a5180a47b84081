//! The size of an ext4 or XFS filesystem, read from its superblock on the device: one 4 KiB
//! read instead of a `dumpe2fs` / `xfs_db` process. NodeStage compares it with the disk's
//! size to grow a filesystem that is smaller than its volume (a volume restored or cloned
//! into a larger size, or expanded while it was not staged).

use std::io::Read;
use std::path::Path;

use super::fs::FsType;

/// Bytes read from the start of the device: both superblocks lie within them (ext4's at
/// 1024, XFS's at 0).
const HEAD: usize = 4096;

const EXT4_SB: usize = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const EXT4_INCOMPAT_64BIT: u32 = 0x80;
const XFS_MAGIC: &[u8; 4] = b"XFSB";

/// A filesystem smaller than its disk by more than this is grown. Filesystems leave a tail
/// smaller than a block (or, for XFS, than a minimal allocation group) unused; a volume is
/// grown in whole LVM extents (4 MiB by default).
pub const GROW_SLACK: u64 = 1 << 20;

/// The size in bytes of the `fs` filesystem whose first [`HEAD`] bytes are `head`, or `None`
/// when they hold no such superblock.
pub fn parse_size(fs: FsType, head: &[u8]) -> Option<u64> {
    match fs {
        FsType::Ext4 => {
            let sb = head.get(EXT4_SB..EXT4_SB + 1024)?;
            if le16(sb, 0x38)? != EXT4_MAGIC {
                return None;
            }
            let log = le32(sb, 0x18)?;
            let block_size = 1024u64.checked_shl(log)?;
            let mut blocks = u64::from(le32(sb, 0x04)?);
            if le32(sb, 0x60)? & EXT4_INCOMPAT_64BIT != 0 {
                blocks |= u64::from(le32(sb, 0x150)?) << 32;
            }
            blocks.checked_mul(block_size)
        }
        FsType::Xfs => {
            if head.get(0..4)? != XFS_MAGIC {
                return None;
            }
            let block_size = u64::from(u32::from_be_bytes(head.get(4..8)?.try_into().ok()?));
            let blocks = u64::from_be_bytes(head.get(8..16)?.try_into().ok()?);
            blocks.checked_mul(block_size)
        }
    }
}

/// Reads the size of the `fs` filesystem on `device` (`Ok(None)`: no such superblock).
pub async fn read_size(device: &Path, fs: FsType) -> std::io::Result<Option<u64>> {
    let device = device.to_owned();
    let head = tokio::task::spawn_blocking(move || {
        let mut head = Vec::with_capacity(HEAD);
        std::fs::File::open(&device)?
            .take(HEAD as u64)
            .read_to_end(&mut head)?;
        Ok::<_, std::io::Error>(head)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(parse_size(fs, &head))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 4 KiB of images made with the driver's mkfs options: ext4 on 64 MiB (1 KiB
    /// blocks, 64bit feature), the same grown to 96 MiB by resize2fs, XFS on 512 MiB.
    const EXT4: &[u8] = include_bytes!("testdata/sb_ext4.bin");
    const EXT4_GROWN: &[u8] = include_bytes!("testdata/sb_ext4_grown.bin");
    const XFS: &[u8] = include_bytes!("testdata/sb_xfs.bin");

    #[test]
    fn real_superblocks() {
        assert_eq!(parse_size(FsType::Ext4, EXT4), Some(64 << 20));
        assert_eq!(parse_size(FsType::Ext4, EXT4_GROWN), Some(96 << 20));
        assert_eq!(parse_size(FsType::Xfs, XFS), Some(512 << 20));
    }

    #[test]
    fn wrong_or_short_content_is_none() {
        assert_eq!(parse_size(FsType::Xfs, EXT4), None);
        assert_eq!(parse_size(FsType::Ext4, XFS), None);
        assert_eq!(parse_size(FsType::Ext4, &EXT4[..1500]), None);
        assert_eq!(parse_size(FsType::Xfs, &XFS[..10]), None);
        assert_eq!(parse_size(FsType::Ext4, &[0; HEAD]), None);
    }

    #[test]
    fn ext4_high_block_count_bits() {
        let mut sb = EXT4.to_vec();
        sb[EXT4_SB + 0x150] = 1;
        assert_eq!(
            parse_size(FsType::Ext4, &sb),
            Some(((1u64 << 32) + (64 << 10)) * 1024)
        );
        // Without the 64bit feature the high word is not part of the count.
        sb[EXT4_SB + 0x60] &= !(EXT4_INCOMPAT_64BIT as u8);
        assert_eq!(parse_size(FsType::Ext4, &sb), Some(64 << 20));
    }

    #[tokio::test]
    async fn reads_a_device_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, XFS).unwrap();
        assert_eq!(
            read_size(&path, FsType::Xfs).await.unwrap(),
            Some(512 << 20)
        );
        assert!(read_size(&dir.path().join("gone"), FsType::Xfs)
            .await
            .is_err());
    }
}
