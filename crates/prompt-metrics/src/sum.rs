//! An exact sum of floats, whose result does not depend on the order of the additions.
//!
//! A query adds latencies line by line while scanning, but per day and group when it reads
//! rollups: a plain `f64` sum would round differently in the two orders. This keeps the exact
//! sum as non-overlapping partials (Shewchuk's algorithm, as in Python's `math.fsum`) and
//! rounds once, correctly, at the end, so a scan and a rollup give the same bits.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The exact sum of the finite floats added so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ExactSum {
    /// Non-overlapping partials, increasing in magnitude, whose exact sum is the sum.
    partials: Vec<f64>,
    /// Sum of the partial results that went beyond `f64`'s range (±infinity), kept apart so
    /// that the partials stay exact; 0 while nothing overflowed.
    overflow: f64,
}

impl ExactSum {
    /// Adds `x` exactly.
    pub(crate) fn add(&mut self, mut x: f64) {
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            if !hi.is_finite() {
                self.overflow += hi;
                x = 0.0;
                continue;
            }
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        if x != 0.0 || self.partials.is_empty() {
            self.partials.push(x);
        }
    }

    /// Adds every partial of `other` (the exact sum of both).
    pub(crate) fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
        self.overflow += other.overflow;
    }

    /// The sum, correctly rounded to the nearest `f64` (ties to even), as `math.fsum`.
    pub(crate) fn value(&self) -> f64 {
        if self.overflow != 0.0 || self.overflow.is_nan() {
            return self.overflow;
        }
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            n -= 1;
            let x = hi;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even when the rest lies exactly halfway: make it not so.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

/// Stored as the partials' bits (a float's decimal form may not read back to the same bits).
impl Serialize for ExactSum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bits: Vec<u64> = std::iter::once(self.overflow)
            .chain(self.partials.iter().copied())
            .map(f64::to_bits)
            .collect();
        bits.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ExactSum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bits = Vec::<u64>::deserialize(d)?;
        let mut values = bits.into_iter().map(f64::from_bits);
        let overflow = values
            .next()
            .ok_or_else(|| serde::de::Error::custom("an exact sum needs its overflow first"))?;
        let partials: Vec<f64> = values.collect();
        if partials.iter().any(|p| !p.is_finite()) {
            return Err(serde::de::Error::custom("a partial sum is not finite"));
        }
        Ok(ExactSum { partials, overflow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sum_of(values: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for &v in values {
            s.add(v);
        }
        s.value()
    }

    #[test]
    fn sums_exactly_where_plain_addition_rounds() {
        assert_eq!(sum_of(&[]), 0.0);
        assert_eq!(sum_of(&[0.1; 10]), 1.0);
        assert_eq!(sum_of(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum_of(&[1.0, 1e-16, 1e-16]), 1.0000000000000002);
        assert_eq!(sum_of(&[f64::MAX, f64::MAX]), f64::INFINITY);
        let mut a = ExactSum::default();
        a.add(f64::MAX);
        let json = serde_json::to_string(&a).expect("serialize");
        let back: ExactSum = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, a);
    }

    proptest! {
        /// Any order, any split into merged parts: the same bits, equal to the exact sum.
        #[test]
        fn order_and_merging_do_not_change_the_sum(
            values in prop::collection::vec(-1e12f64..1e12, 0..200),
            split in 0usize..200,
            seed in any::<u64>(),
        ) {
            let whole = sum_of(&values);
            let mut shuffled = values.clone();
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(sum_of(&shuffled).to_bits(), whole.to_bits());
            let split = split.min(values.len());
            let mut a = ExactSum::default();
            values[..split].iter().for_each(|&v| a.add(v));
            let mut b = ExactSum::default();
            values[split..].iter().for_each(|&v| b.add(v));
            let b: ExactSum = serde_json::from_str(&serde_json::to_string(&b).expect("json")).expect("back");
            a.merge(&b);
            prop_assert_eq!(a.value().to_bits(), whole.to_bits());
        }
    }
}
