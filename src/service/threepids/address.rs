//! Phone numbers and email addresses as they are stored and compared: a phone number in
//! E.164 digits without the `+` (the spec's `msisdn`), an email address lowercased.

use ruma::thirdparty::Medium;

use crate::{Error, Result};

/// A verified-or-not third-party id, normalised.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub medium: Medium,
    /// `msisdn`: digits of the E.164 form (`447400123123`); `email`: lowercased.
    pub address: String,
}

impl Address {
    /// A phone number given as a country (ISO 3166 two letters) and the number as the
    /// user typed it, in any national or international format.
    pub fn phone(country: &str, number: &str) -> Result<Self> {
        let country: Option<phonenumber::country::Id> = if country.is_empty() {
            None
        } else {
            Some(
                country
                    .to_ascii_uppercase()
                    .parse()
                    .map_err(|_| Error::invalid_param("Unknown country code"))?,
            )
        };
        let parsed = phonenumber::parse(country, number)
            .map_err(|_| Error::invalid_param("Not a phone number"))?;
        if !parsed.is_valid() {
            return Err(Error::invalid_param("Not a valid phone number"));
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        Ok(Self {
            medium: Medium::Msisdn,
            address: e164.trim_start_matches('+').to_owned(),
        })
    }

    /// An email address: one `@` between a non-empty local part and a domain with a
    /// dot, no spaces; kept lowercased.
    pub fn email(address: &str) -> Result<Self> {
        let address = address.trim();
        let valid = address.len() <= 254
            && !address.chars().any(|c| c.is_whitespace() || c.is_control())
            && address.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if !valid {
            return Err(Error::invalid_param("Not an email address"));
        }
        Ok(Self {
            medium: Medium::Email,
            address: address.to_lowercase(),
        })
    }

    /// A stored-form address of a medium, as clients send it back (`/3pid/delete`,
    /// `m.id.thirdparty` logins): normalised again, so `+44 7400…` finds `447400…`.
    pub fn parse(medium: &Medium, address: &str) -> Result<Self> {
        match medium {
            Medium::Email => Self::email(address),
            Medium::Msisdn => {
                let digits = address.trim().trim_start_matches('+');
                Self::phone("", &format!("+{digits}"))
            }
            _ => Err(Error::invalid_param(
                "Only phone numbers (msisdn) and email addresses are supported",
            )),
        }
    }

    /// The medium's name in the spec (`msisdn`, `email`).
    pub fn medium_str(&self) -> &str {
        self.medium.as_str()
    }

    /// The number with its `+` (E.164), for senders; the email address as is.
    pub fn display(&self) -> String {
        match self.medium {
            Medium::Msisdn => format!("+{}", self.address),
            _ => self.address.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_kept_in_e164_digits() {
        let national = Address::phone("GB", "07400 123123").unwrap();
        assert_eq!(national.address, "447400123123");
        let international = Address::phone("gb", "+44 (0)7400-123123").unwrap();
        assert_eq!(international, national);
        assert_eq!(
            Address::parse(&Medium::Msisdn, "+447400123123").unwrap(),
            national
        );
        assert_eq!(
            Address::parse(&Medium::Msisdn, "447400123123").unwrap(),
            national
        );
        assert_eq!(national.display(), "+447400123123");
        assert!(Address::phone("GB", "12").is_err());
        assert!(Address::phone("XX", "07400123123").is_err());
        assert!(Address::phone("GB", "not a number").is_err());
    }

    #[test]
    fn email_addresses_are_lowercased_and_checked() {
        let email = Address::email(" Alice@Example.ORG ").unwrap();
        assert_eq!(email.address, "alice@example.org");
        for bad in [
            "alice",
            "@example.org",
            "alice@",
            "alice@localhost",
            "a b@example.org",
            "a@b@c.org",
        ] {
            assert!(Address::email(bad).is_err(), "{bad}");
        }
    }
}
