//! JSON from outside read one entry at a time: a list or a map handed, entry by entry, to a
//! closure that keeps what it needs. An answer of a million entries then costs no more memory
//! than the entries kept, where collecting it first (or building a `serde_json::Value`) costs
//! ten to twenty times its size.

use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};

/// Each element of a JSON array, read as `T`, handed to `add` with the value being built from
/// `init`; an `Err` from `add` ends the reading with that error.
pub fn each_element<'de, D, T, A, F>(d: D, init: A, add: F) -> Result<A, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: FnMut(&mut A, T) -> Result<(), String>,
{
    struct Elements<T, A, F>(A, F, PhantomData<T>);
    impl<'de, T: Deserialize<'de>, A, F: FnMut(&mut A, T) -> Result<(), String>> Visitor<'de> for Elements<T, A, F> {
        type Value = A;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<S: SeqAccess<'de>>(mut self, mut seq: S) -> Result<A, S::Error> {
            while let Some(e) = seq.next_element::<T>()? {
                (self.1)(&mut self.0, e).map_err(S::Error::custom)?;
            }
            Ok(self.0)
        }
    }
    d.deserialize_seq(Elements(init, add, PhantomData))
}

/// A string read as [`crate::sys::one_line`] keeps it: at most `N` characters on one line, taken
/// from the text as it is read (borrowed from the input, or from the parser's scratch for a
/// string with escapes), so a string of megabytes never becomes a `String` of megabytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OneLine<const N: usize>(pub String);

impl<'de, const N: usize> Deserialize<'de> for OneLine<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<const N: usize>;
        impl<const N: usize> Visitor<'_> for Text<N> {
            type Value = OneLine<N>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: Error>(self, v: &str) -> Result<OneLine<N>, E> {
                Ok(OneLine(crate::sys::one_line(v, N)))
            }
        }
        d.deserialize_str(Text::<N>)
    }
}

/// For `#[serde(deserialize_with = "…::one_line::<_, N>")]` on a `String` field: see [`OneLine`].
pub fn one_line<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<String, D::Error> {
    OneLine::<N>::deserialize(d).map(|t| t.0)
}

/// [`one_line`] for an `Option<String>` field (`null` is `None`).
pub fn one_line_or_null<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<Option<String>, D::Error> {
    Option::<OneLine<N>>::deserialize(d).map(|t| t.map(|t| t.0))
}

/// Each entry of a JSON object, its key read as `K` and its value as `V`, handed to `add` as
/// [`each_element`] hands elements.
pub fn each_entry<'de, D, K, V, A, F>(d: D, init: A, add: F) -> Result<A, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de>,
    V: Deserialize<'de>,
    F: FnMut(&mut A, K, V) -> Result<(), String>,
{
    struct Entries<K, V, A, F>(A, F, PhantomData<(K, V)>);
    impl<'de, K: Deserialize<'de>, V: Deserialize<'de>, A, F: FnMut(&mut A, K, V) -> Result<(), String>> Visitor<'de> for Entries<K, V, A, F> {
        type Value = A;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<M: MapAccess<'de>>(mut self, mut map: M) -> Result<A, M::Error> {
            while let Some((k, v)) = map.next_entry::<K, V>()? {
                (self.1)(&mut self.0, k, v).map_err(M::Error::custom)?;
            }
            Ok(self.0)
        }
    }
    d.deserialize_map(Entries(init, add, PhantomData))
}

/// The start of `e`'s text, never more than about `max` bytes of it held: serde's text quotes
/// what it refused, which may be megabytes of a hand-edited file.
fn first_chars(e: &impl std::fmt::Display, max: usize) -> String {
    struct Capped(String, usize);
    impl std::fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = self.1.saturating_sub(self.0.len());
            let mut end = s.len().min(room);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.0.push_str(&s[..end]);
            Ok(())
        }
    }
    let mut c = Capped(String::new(), max);
    let _ = std::fmt::Write::write_fmt(&mut c, format_args!("{e}"));
    c.0
}

/// A JSON error as one line of at most 300 characters, never more than about 1,200 bytes of its
/// text held on the way: serde_json's message for a value of the wrong type quotes that value
/// whole (a string of megabytes, from a peer or a file).
pub fn error_text(e: &impl std::fmt::Display) -> String {
    crate::sys::one_line(&first_chars(e, 1200), 300)
}
