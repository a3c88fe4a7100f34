//! Escaping of option values and the [`OptList`] builder.
//!
//! QEMU's option parsers (QemuOpts and keyval) split an option list on `,` and
//! read a doubled `,,` as one literal comma. Every free-form value therefore goes
//! through [`escape`], so that a path such as `/a,b=c` renders as `/a,,b=c` and can
//! never inject another option. [`OptList`] escapes every value it is given, so
//! escaping cannot be forgotten.

use std::fmt::Display;

/// Escape one option value: every `,` becomes `,,`.
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Render a boolean the way QEMU spells it in option lists.
pub fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}

/// Builder for one QEMU option list: `head,k1=v1,k2=v2`.
///
/// The head (a driver, backend or object type) is written verbatim; it comes
/// from this crate or is checked by validation. Every value is escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptList {
    buf: String,
}

impl OptList {
    /// Start a list with a bare head, such as `virtio-blk-pci` or `socket`.
    pub fn new(head: &str) -> Self {
        Self {
            buf: head.to_owned(),
        }
    }

    /// Start a list with no head; the first item is a `k=v` pair.
    pub fn empty() -> Self {
        Self::default()
    }

    fn push_raw(&mut self, item: &str) {
        if !self.buf.is_empty() {
            self.buf.push(',');
        }
        self.buf.push_str(item);
    }

    /// Append `key=value`, escaping the value.
    pub fn kv(mut self, key: &str, value: impl AsRef<str>) -> Self {
        let item = format!("{key}={}", escape(value.as_ref()));
        self.push_raw(&item);
        self
    }

    /// Append `key=value` for a number (nothing to escape).
    pub fn num(mut self, key: &str, value: impl Display) -> Self {
        self.push_raw(&format!("{key}={value}"));
        self
    }

    /// Append `key=on` or `key=off`.
    pub fn flag(mut self, key: &str, value: bool) -> Self {
        self.push_raw(&format!("{key}={}", on_off(value)));
        self
    }

    /// Append `key=on` only when `value` is true (for properties that default to off).
    pub fn on_if(self, key: &str, value: bool) -> Self {
        if value { self.flag(key, true) } else { self }
    }

    /// Append `key=value` (escaped) when the value is present.
    pub fn opt<S: AsRef<str>>(self, key: &str, value: Option<S>) -> Self {
        match value {
            Some(v) => self.kv(key, v),
            None => self,
        }
    }

    /// Append `key=N` when the number is present.
    pub fn opt_num<N: Display>(self, key: &str, value: Option<N>) -> Self {
        match value {
            Some(v) => self.num(key, v),
            None => self,
        }
    }

    /// Append `key=on|off` when the flag is present.
    pub fn opt_flag(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(v) => self.flag(key, v),
            None => self,
        }
    }

    /// Append every `(key, value)` pair in order, escaping the values.
    pub fn pairs<'a>(mut self, pairs: impl IntoIterator<Item = &'a (String, String)>) -> Self {
        for (k, v) in pairs {
            self = self.kv(k, v);
        }
        self
    }

    /// The rendered list.
    pub fn finish(self) -> String {
        self.buf
    }
}

impl From<OptList> for String {
    fn from(list: OptList) -> Self {
        list.finish()
    }
}

/// Render a MiB size the way QEMU reads it (`2048M`).
pub fn mib(size: u64) -> String {
    format!("{size}M")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_doubles_commas() {
        assert_eq!(escape("/a,b=c"), "/a,,b=c");
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape(",,"), ",,,,");
    }

    #[test]
    fn optlist_renders_in_order() {
        let s = OptList::new("drv")
            .kv("file", "/a,b=c")
            .num("n", 3)
            .flag("x", false)
            .on_if("y", false)
            .on_if("z", true)
            .opt("o", None::<&str>)
            .opt("p", Some("v"))
            .opt_num("q", Some(7u32))
            .opt_flag("r", Some(true))
            .finish();
        assert_eq!(s, "drv,file=/a,,b=c,n=3,x=off,z=on,p=v,q=7,r=on");
    }

    #[test]
    fn optlist_without_head() {
        assert_eq!(OptList::empty().kv("a", "1").kv("b", "").finish(), "a=1,b=");
    }
}
