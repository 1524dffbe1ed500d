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
