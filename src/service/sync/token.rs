//! Sync tokens: `s{stream position}_{typing serial}`, with `_{to-device position}` when a
//! sync handed out only part of a device's to-device messages up to the position.

use std::{fmt, str::FromStr};

/// A point in the event stream and in the typing serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncToken {
    pub position: u64,
    pub typing: u64,
    /// The last to-device message handed out, when the inbox held more up to `position`.
    pub to_device: Option<u64>,
}

impl SyncToken {
    /// The to-device messages up to here were received.
    pub fn to_device_received(&self) -> u64 {
        self.to_device.unwrap_or(self.position).min(self.position)
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.position, self.typing)?;
        match self.to_device {
            Some(to_device) => write!(f, "_{to_device}"),
            None => Ok(()),
        }
    }
}

impl FromStr for SyncToken {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let rest = text.strip_prefix('s').ok_or(())?;
        let mut parts = rest.split('_');
        let position = decimal(parts.next().ok_or(())?).ok_or(())?;
        let typing = decimal(parts.next().ok_or(())?).ok_or(())?;
        let to_device = match parts.next() {
            Some(part) => Some(decimal(part).ok_or(())?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Self {
            position,
            typing,
            to_device,
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
            to_device: None,
        };
        assert_eq!(token.to_string(), "s1234_7");
        assert_eq!("s1234_7".parse::<SyncToken>(), Ok(token));
        let partial = SyncToken {
            to_device: Some(1200),
            ..token
        };
        assert_eq!(partial.to_string(), "s1234_7_1200");
        assert_eq!("s1234_7_1200".parse::<SyncToken>(), Ok(partial));
        assert_eq!(partial.to_device_received(), 1200);
        assert!("1234".parse::<SyncToken>().is_err());
        assert!("s12_x".parse::<SyncToken>().is_err());
        for odd in [
            "s+1_0",
            "s01_0",
            "s1_",
            "s_1",
            "s1_-0",
            "s18446744073709551616_0",
            "s1_0_",
            "s1_0_1_2",
        ] {
            assert!(odd.parse::<SyncToken>().is_err(), "{odd}");
        }
    }
}
