//! A GRUB environment block (what `grub-editenv` and GRUB's `load_env`/`save_env` read and
//! write): exactly 1024 bytes, `# GRUB Environment Block\n`, `key=value` lines, `#` padding.
//! GRUB escapes `\` and newline in values with a backslash; so does this code. Used for the
//! machine's `clb.env` (kernel arguments), so the agent needs no GRUB tools on a host.

use thiserror::Error;

pub const ENV_BLOCK_SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvBlockError {
    #[error("not a GRUB environment block (bad header)")]
    BadHeader,
    #[error("{0} bytes: a GRUB environment block is 1024")]
    BadSize(usize),
    #[error("the variables do not fit in 1024 bytes")]
    TooLarge,
}

/// The variables of a block, in their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvBlock {
    vars: Vec<(String, String)>,
}

impl EnvBlock {
    pub fn parse(block: &[u8]) -> Result<Self, EnvBlockError> {
        if block.len() != ENV_BLOCK_SIZE {
            return Err(EnvBlockError::BadSize(block.len()));
        }
        let text = String::from_utf8_lossy(block);
        let body = text.strip_prefix(HEADER).ok_or(EnvBlockError::BadHeader)?;
        let mut vars = Vec::new();
        let mut chars = body.chars().peekable();
        // Lines, where a backslash makes the next character (even a newline) literal.
        let mut line = String::new();
        let mut lines = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => line.push(chars.next().unwrap_or('\\')),
                '\n' => lines.push(std::mem::take(&mut line)),
                c => line.push(c),
            }
        }
        for l in lines {
            if l.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = l.split_once('=') {
                vars.push((k.to_string(), v.to_string()));
            }
        }
        Ok(Self { vars })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The variables in their order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets `key` in place, or appends it.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.vars.push((key.to_string(), value.to_string())),
        }
    }

    pub fn to_block(&self) -> Result<Vec<u8>, EnvBlockError> {
        let mut out = String::from(HEADER);
        // A name is escaped like a value: `parse` reads escapes before it splits a line at
        // its first '=', so a name can hold an escaped newline (found by fuzz/, boot_state).
        for (k, v) in &self.vars {
            escape_into(&mut out, k);
            out.push('=');
            escape_into(&mut out, v);
            out.push('\n');
        }
        if out.len() > ENV_BLOCK_SIZE {
            return Err(EnvBlockError::TooLarge);
        }
        let mut block = out.into_bytes();
        block.resize(ENV_BLOCK_SIZE, b'#');
        Ok(block)
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if c == '\\' || c == '\n' {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_name_with_an_escaped_newline_survives_a_rewrite() {
        let mut block = b"# GRUB Environment Block\nclb_fallback\\\nclb_tries=3\n".to_vec();
        block.resize(ENV_BLOCK_SIZE, b'#');
        let env = EnvBlock::parse(&block).unwrap();
        assert_eq!(env.get("clb_fallback\nclb_tries"), Some("3"));
        assert_eq!(env.get("clb_tries"), None);
        assert_eq!(EnvBlock::parse(&env.to_block().unwrap()).unwrap(), env);
    }

    #[test]
    fn round_trip_keeps_order_and_escapes() {
        let mut e = EnvBlock::default();
        e.set("clb_cmdline", "console=ttyS0 quiet");
        e.set("saved_entry", "a\\b");
        e.set("clb_cmdline", "console=ttyS1");
        let block = e.to_block().unwrap();
        assert_eq!(block.len(), 1024);
        assert!(block.starts_with(
            b"# GRUB Environment Block\nclb_cmdline=console=ttyS1\nsaved_entry=a\\\\b\n#"
        ));
        assert_eq!(EnvBlock::parse(&block).unwrap(), e);
        assert_eq!(e.get("saved_entry"), Some("a\\b"));
        assert_eq!(e.get("none"), None);
    }

    #[test]
    fn refuses_what_is_not_a_block() {
        assert_eq!(EnvBlock::parse(b"x"), Err(EnvBlockError::BadSize(1)));
        assert_eq!(
            EnvBlock::parse(&[b'#'; 1024]),
            Err(EnvBlockError::BadHeader)
        );
        let mut e = EnvBlock::default();
        e.set("k", &"v".repeat(1100));
        assert_eq!(e.to_block(), Err(EnvBlockError::TooLarge));
    }
}
