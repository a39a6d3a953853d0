//! What an operator keeps free of a whole: the data root's disk (`--disk-reserve`) or the
//! host's memory that the standby pool leaves available (`--standby-memory-reserve`).

use crate::parse_size;

/// A part of a whole kept free: a size, or a percentage of the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    Bytes(u64),
    /// Percent of the whole.
    Percent(u8),
}

impl std::str::FromStr for Reserve {
    type Err = String;

    /// `5%`, `2G`, `512M`, or bytes.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("invalid reserve {s:?}: give a percentage (5%) or a size (2G, 512M)");
        if let Some(p) = s.strip_suffix('%') {
            let p: u8 = p.parse().map_err(|_| bad())?;
            return if p < 100 {
                Ok(Reserve::Percent(p))
            } else {
                Err(bad())
            };
        }
        parse_size(s).map(Reserve::Bytes).ok_or_else(bad)
    }
}

impl Reserve {
    /// Bytes kept free of a whole of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Reserve::Bytes(b) => b,
            Reserve::Percent(p) => total / 100 * u64::from(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_parse_as_percentages_or_sizes() {
        let p = |s: &str| s.parse::<Reserve>();
        assert_eq!(p("5%"), Ok(Reserve::Percent(5)));
        assert_eq!(p("2G"), Ok(Reserve::Bytes(2 << 30)));
        assert_eq!(p("512m"), Ok(Reserve::Bytes(512 << 20)));
        assert_eq!(p("4096"), Ok(Reserve::Bytes(4096)));
        for bad in ["", "100%", "x%", "G", "-1G", "99999999999999999999G"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert_eq!(Reserve::Percent(5).bytes(1000), 50);
        assert_eq!(Reserve::Bytes(7).bytes(1000), 7);
    }
}
