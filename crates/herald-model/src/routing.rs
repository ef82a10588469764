//! Which partition an event goes to. Stable and documented: the same key always lands on the same
//! partition for a given partition count, with Kafka's default partitioner (murmur2, positive
//! part, modulo), so keys route alike on every backend, including a future Kafka one.

/// Kafka's murmur2 (seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `partitions`: `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The partition of an event: by its key when it has one; otherwise by its `(source, id)`, which
/// spreads events evenly and sends a republished event to the same partition, where dedupe sees it.
pub fn route(key: Option<&str>, source: &str, id: &str, partitions: u32) -> u32 {
    match key {
        Some(k) => partition_for_key(k.as_bytes(), partitions),
        None => {
            let mut buf = Vec::with_capacity(source.len() + id.len() + 1);
            buf.extend_from_slice(source.as_bytes());
            buf.push(0);
            buf.extend_from_slice(id.as_bytes());
            partition_for_key(&buf, partitions)
        }
    }
}

/// [`route`] for an event.
pub fn route_event(event: &herald_core::Event, partitions: u32) -> u32 {
    route(event.key(), event.source(), event.id(), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2 (Java ints).
        let cases: &[(&str, i32)] = &[
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            ("abc", 479470107),
        ];
        for &(input, want) in cases {
            assert_eq!(murmur2(input.as_bytes()) as i32, want, "{input}");
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let mut counts = [0u32; 8];
        for i in 0..80_000 {
            counts[partition_for_key(format!("customer-{i}").as_bytes(), 8) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn unkeyed_events_route_by_source_and_id() {
        assert_eq!(route(None, "/s", "1", 8), route(None, "/s", "1", 8));
        assert_eq!(route(Some("k"), "/a", "1", 8), route(Some("k"), "/b", "2", 8));
        let spread: std::collections::HashSet<u32> = (0..100).map(|i| route(None, "/s", &i.to_string(), 8)).collect();
        assert_eq!(spread.len(), 8);
    }
}
