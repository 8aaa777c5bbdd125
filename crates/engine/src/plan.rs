//! Pure part planning: how an object is cut into S3 parts. No I/O.
//!
//! S3 allows at most 10,000 parts of 5 MiB..5 GiB each (the last may be smaller)
//! and objects up to 5 TiB. A known length gets equal parts, enlarged until the
//! object fits in 10,000 of them. An unknown length gets parts that double in size
//! every [`GROWTH_INTERVAL`] parts, capped by what one part may hold in memory, so a
//! stream of any length S3 accepts fits without knowing its length up front.

use crate::error::TransferError;

pub const MIB: u64 = 1024 * 1024;
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
pub const MAX_PARTS: u32 = 10_000;
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * MIB;
/// Parts of an unknown-length stream double in size after this many parts.
pub const GROWTH_INTERVAL: u32 = 500;

/// One part: its 1-based S3 part number and the byte range it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpec {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
}

impl PartSpec {
    /// The last byte of the part, as an HTTP `Range` wants it.
    pub fn last_byte(&self) -> u64 {
        self.offset + self.len - 1
    }
}

/// Equal parts for an object whose length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownPlan {
    pub size: u64,
    pub part_size: u64,
}

impl KnownPlan {
    /// Plans `size` bytes with `preferred` part size, never letting one part
    /// exceed `max_part` (what the memory budget can hold).
    pub fn new(size: u64, preferred: u64, max_part: u64) -> Result<Self, TransferError> {
        if size > MAX_OBJECT_SIZE {
            return Err(TransferError::TooLarge {
                size,
                reason: "S3 objects are limited to 5 TiB".into(),
            });
        }
        let fitting = size.div_ceil(u64::from(MAX_PARTS)).next_multiple_of(MIB);
        let limit = max_part.min(MAX_PART_SIZE);
        let part_size = clamp_part_size(preferred).min(limit).max(fitting);
        if part_size > limit {
            return Err(TransferError::TooLarge {
                size,
                reason: format!(
                    "10,000 parts would each need {part_size} bytes, more than the {limit} bytes one part may hold in memory"
                ),
            });
        }
        Ok(Self { size, part_size })
    }

    /// Whether the object fits one PutObject instead of a multipart upload.
    pub fn is_single_put(&self) -> bool {
        self.size <= self.part_size
    }

    pub fn part_count(&self) -> u32 {
        // At most MAX_PARTS by construction, so the cast cannot truncate.
        self.size.div_ceil(self.part_size).max(1) as u32
    }

    pub fn part(&self, number: u32) -> PartSpec {
        let offset = u64::from(number - 1) * self.part_size;
        PartSpec {
            number,
            offset,
            len: self.part_size.min(self.size - offset),
        }
    }

    pub fn parts(&self) -> impl Iterator<Item = PartSpec> + '_ {
        (1..=self.part_count()).map(|n| self.part(n))
    }
}

/// Growing parts for a stream whose length is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowingPlan {
    pub base: u64,
    pub cap: u64,
}

impl GrowingPlan {
    pub fn new(preferred: u64, max_part: u64) -> Self {
        let cap = clamp_part_size(max_part);
        Self {
            base: clamp_part_size(preferred).min(cap),
            cap,
        }
    }

    pub fn part_size(&self, number: u32) -> u64 {
        let doublings = (number.saturating_sub(1) / GROWTH_INTERVAL).min(32);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The longest stream this plan can carry in 10,000 parts.
    pub fn capacity(&self) -> u64 {
        (1..=MAX_PARTS)
            .map(|n| self.part_size(n))
            .sum::<u64>()
            .min(MAX_OBJECT_SIZE)
    }
}

fn clamp_part_size(bytes: u64) -> u64 {
    bytes.clamp(MIN_PART_SIZE, MAX_PART_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1024 * MIB;

    #[test]
    fn small_objects_are_a_single_put() {
        let plan = KnownPlan::new(0, 8 * MIB, GIB).unwrap();
        assert!(plan.is_single_put());
        assert_eq!(plan.part_count(), 1);
        assert!(
            KnownPlan::new(8 * MIB, 8 * MIB, GIB)
                .unwrap()
                .is_single_put()
        );
        assert!(
            !KnownPlan::new(8 * MIB + 1, 8 * MIB, GIB)
                .unwrap()
                .is_single_put()
        );
    }

    #[test]
    fn preferred_part_size_is_clamped_to_s3_limits() {
        assert_eq!(
            KnownPlan::new(GIB, MIB, GIB).unwrap().part_size,
            MIN_PART_SIZE
        );
    }

    #[test]
    fn large_objects_get_larger_parts_to_fit_ten_thousand() {
        let size = 200 * GIB;
        let plan = KnownPlan::new(size, 8 * MIB, GIB).unwrap();
        assert!(plan.part_count() <= MAX_PARTS);
        assert_eq!(plan.part_size % MIB, 0);
        assert_eq!(plan.part_size, 21 * MIB);
    }

    #[test]
    fn parts_larger_than_memory_allows_are_refused() {
        let err = KnownPlan::new(4 * 1024 * GIB, 8 * MIB, 256 * MIB).unwrap_err();
        assert_eq!(err.kind(), "too_large");
        assert!(KnownPlan::new(MAX_OBJECT_SIZE + 1, 8 * MIB, 8 * GIB).is_err());
    }

    #[test]
    fn growing_plan_reaches_five_tib_with_a_one_gib_cap() {
        let plan = GrowingPlan::new(8 * MIB, GIB);
        assert_eq!(plan.part_size(1), 8 * MIB);
        assert_eq!(plan.part_size(500), 8 * MIB);
        assert_eq!(plan.part_size(501), 16 * MIB);
        assert_eq!(plan.part_size(10_000), GIB);
        assert_eq!(plan.capacity(), MAX_OBJECT_SIZE);
    }

    #[test]
    fn growing_plan_capacity_is_bounded_by_memory() {
        let plan = GrowingPlan::new(8 * MIB, 256 * MIB);
        assert!(plan.capacity() > 1024 * GIB, "{}", plan.capacity());
        assert!(plan.capacity() < MAX_OBJECT_SIZE);
    }

    proptest! {
        #[test]
        fn known_plan_covers_every_byte_once(size in 0u64..=MAX_OBJECT_SIZE, preferred in 0u64..=6 * GIB) {
            let Ok(plan) = KnownPlan::new(size, preferred, MAX_PART_SIZE) else {
                return Ok(());
            };
            prop_assert!(plan.part_count() <= MAX_PARTS);
            prop_assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&plan.part_size));
            let first = plan.part(1);
            let last = plan.part(plan.part_count());
            prop_assert_eq!(first.offset, 0);
            prop_assert_eq!(last.offset + last.len, size);
            if plan.part_count() > 1 {
                let second = plan.part(2);
                prop_assert_eq!(second.offset, first.len);
                prop_assert!(last.len >= 1 && last.len <= plan.part_size);
            }
        }
    }
}
