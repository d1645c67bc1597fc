//! Redacting wrappers for log fields (design.md §2.15): phone numbers are shown with all but
//! their last three characters masked, secrets never.

use std::fmt;

/// A dialled number or caller id in a log line.
pub struct Number<'a>(pub &'a str);

impl fmt::Display for Number<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars: Vec<char> = self.0.chars().collect();
        let keep = chars.len().min(3);
        let masked = chars.len() - keep;
        for _ in 0..masked {
            f.write_str("*")?;
        }
        for c in &chars[masked..] {
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Number<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A password or token: always printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_only_their_tail() {
        assert_eq!(Number("+15551234567").to_string(), "*********567");
        assert_eq!(Number("echo").to_string(), "*cho");
        assert_eq!(Number("12").to_string(), "12");
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<redacted>");
    }
}
