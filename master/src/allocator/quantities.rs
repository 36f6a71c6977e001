//! [`Quantities`]: the four scalars that shares, quota and headroom are
//! counted in (cpus, mem, disk, gpus), as fixed-size integer thousandths so
//! that bookkeeping is cheap and never drifts.

use std::ops::{Add, AddAssign, Sub, SubAssign};

use agora_proto::Resources;

/// Names of the scalars that count towards shares and quota, in index order.
pub const KINDS: [&str; 4] = ["cpus", "mem", "disk", "gpus"];

/// "No limit" for one kind.
pub(crate) const UNLIMITED: i64 = i64::MAX;

/// Amounts of cpus, mem, disk and gpus in thousandths of a unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quantities(pub [i64; 4]);

impl Quantities {
    /// All zero.
    pub const ZERO: Quantities = Quantities([0; 4]);

    /// The cpus/mem/disk/gpus in `r`, summed over reservation roles; other
    /// resources (ports, named scalars) are ignored.
    pub fn of(r: &Resources) -> Self {
        let mut q = [0; 4];
        for (i, name) in KINDS.iter().enumerate() {
            q[i] = (r.get_scalar(name) * 1000.0).round() as i64;
        }
        Quantities(q)
    }

    /// The unreserved resources these quantities describe (zero kinds omitted).
    pub fn to_resources(self) -> Resources {
        let mut r = Resources::new();
        for (i, name) in KINDS.iter().enumerate() {
            if self.0[i] > 0 && self.0[i] != UNLIMITED {
                r = r.scalar(name, self.0[i] as f64 / 1000.0);
            }
        }
        r
    }

    /// Whether every kind is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }

    /// Per kind `max(self - other, 0)`, saturating at the ends of `i64`.
    pub fn gap(self, other: Quantities) -> Quantities {
        let mut out = [0; 4];
        for (i, v) in out.iter_mut().enumerate() {
            *v = self.0[i].saturating_sub(other.0[i]).max(0);
        }
        Quantities(out)
    }

    /// Per kind minimum.
    pub fn min(self, other: Quantities) -> Quantities {
        let mut out = self.0;
        for (i, v) in out.iter_mut().enumerate() {
            *v = (*v).min(other.0[i]);
        }
        Quantities(out)
    }

    /// Whether every kind of `self` is at most the same kind of `other`.
    pub fn fits_in(&self, other: &Quantities) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a <= b)
    }

    /// The largest fraction `self / total` over the kinds the cluster has.
    pub fn dominant_share(&self, total: &Quantities) -> f64 {
        let mut share: f64 = 0.0;
        for i in 0..4 {
            if total.0[i] > 0 {
                share = share.max(self.0[i] as f64 / total.0[i] as f64);
            }
        }
        share
    }
}

impl Add for Quantities {
    type Output = Quantities;
    fn add(mut self, rhs: Quantities) -> Quantities {
        self += rhs;
        self
    }
}

impl AddAssign for Quantities {
    fn add_assign(&mut self, rhs: Quantities) {
        for i in 0..4 {
            self.0[i] = self.0[i].saturating_add(rhs.0[i]);
        }
    }
}

impl Sub for Quantities {
    type Output = Quantities;
    fn sub(mut self, rhs: Quantities) -> Quantities {
        self -= rhs;
        self
    }
}

impl SubAssign for Quantities {
    fn sub_assign(&mut self, rhs: Quantities) {
        for i in 0..4 {
            self.0[i] = self.0[i].saturating_sub(rhs.0[i]);
        }
    }
}

impl std::ops::Neg for Quantities {
    type Output = Quantities;
    fn neg(self) -> Quantities {
        Quantities::ZERO - self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_scalars_in_thousandths_and_ignores_ports() {
        let r = Resources::parse("cpus:1.5;mem:64;ports:[1-10];cpus(prod):0.5").unwrap();
        assert_eq!(Quantities::of(&r), Quantities([2000, 64000, 0, 0]));
    }

    #[test]
    fn dominant_share_is_the_largest_fraction() {
        let total = Quantities([10_000, 1_000_000, 0, 0]);
        assert_eq!(Quantities([1000, 500_000, 0, 0]).dominant_share(&total), 0.5);
    }

    #[test]
    fn gap_never_goes_below_zero() {
        let g = Quantities([5, 5, 0, 0]).gap(Quantities([3, 9, 0, 0]));
        assert_eq!(g, Quantities([2, 0, 0, 0]));
    }
}
