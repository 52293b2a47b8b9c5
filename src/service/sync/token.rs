//! Sync tokens: `s{stream position}_{typing serial}`.

use std::{fmt, str::FromStr};

/// A point in the event stream and in the typing serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncToken {
    pub position: u64,
    pub typing: u64,
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.position, self.typing)
    }
}

impl FromStr for SyncToken {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let rest = text.strip_prefix('s').ok_or(())?;
        let (position, typing) = rest.split_once('_').ok_or(())?;
        Ok(Self {
            position: decimal(position).ok_or(())?,
            typing: decimal(typing).ok_or(())?,
        })
    }
}

/// A number as tokens spell it: decimal digits only, no sign, no leading zero, so each
/// token has exactly one spelling.
pub fn decimal(text: &str) -> Option<u64> {
    let canonical = text.bytes().all(|b| b.is_ascii_digit())
        && !text.is_empty()
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = SyncToken {
            position: 1234,
            typing: 7,
        };
        assert_eq!(token.to_string(), "s1234_7");
        assert_eq!("s1234_7".parse::<SyncToken>(), Ok(token));
        assert!("1234".parse::<SyncToken>().is_err());
        assert!("s12_x".parse::<SyncToken>().is_err());
        for odd in [
            "s+1_0",
            "s01_0",
            "s1_",
            "s_1",
            "s1_-0",
            "s18446744073709551616_0",
        ] {
            assert!(odd.parse::<SyncToken>().is_err(), "{odd}");
        }
    }
}
