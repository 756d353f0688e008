//! Key layouts of the store's trees. `\0` separates parts: it cannot occur in watch names,
//! namespaces or uids.

/// Key of one object's state: `{watch}\0{namespace}\0{uid}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(Vec<u8>);

impl ObjectKey {
    /// Wraps raw key bytes read back from the store.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        ObjectKey(bytes)
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The uid part of the key.
    pub fn uid(&self) -> &str {
        let last = self.0.iter().rposition(|b| *b == 0).map_or(0, |i| i + 1);
        std::str::from_utf8(&self.0[last..]).unwrap_or("")
    }
}

/// The key of an object's state.
pub fn object_key(watch: &str, namespace: &str, uid: &str) -> ObjectKey {
    let mut k = object_prefix(watch, Some(namespace));
    k.extend_from_slice(uid.as_bytes());
    ObjectKey(k)
}

/// The prefix of every object of `watch` (in `namespace`, when given).
pub fn object_prefix(watch: &str, namespace: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(watch.len() + 64);
    k.extend_from_slice(watch.as_bytes());
    k.push(0);
    if let Some(ns) = namespace {
        k.extend_from_slice(ns.as_bytes());
        k.push(0);
    }
    k
}

/// The checkpoint key of a watch scope: one namespace, or all (`*`).
pub fn checkpoint_key(watch: &str, namespace: Option<&str>) -> Vec<u8> {
    let mut k = watch.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(namespace.unwrap_or("*").as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_their_prefixes() {
        let k = object_key("widgets", "team-a", "u-1");
        assert!(k.as_bytes().starts_with(&object_prefix("widgets", None)));
        assert!(k
            .as_bytes()
            .starts_with(&object_prefix("widgets", Some("team-a"))));
        assert!(!k
            .as_bytes()
            .starts_with(&object_prefix("widgets", Some("team"))));
        assert!(!k.as_bytes().starts_with(&object_prefix("widget", None)));
        assert_eq!(k.uid(), "u-1");
        assert_ne!(checkpoint_key("w", None), checkpoint_key("w", Some("a")));
    }
}
