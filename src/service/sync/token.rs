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
            position: position.parse().map_err(|_| ())?,
            typing: typing.parse().map_err(|_| ())?,
        })
    }
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
    }
}
