//! BEP 42 (DHT security extension): a node id's first 21 bits are bound to
//! its IPv4 address by crc32c, and its last byte carries the random `r`.
//!
//! Checks apply to public addresses only: BEP 42 exempts local networks
//! (10/8, 172.16/12, 192.168/16, 169.254/16, 127/8), so a test DHT on
//! 127.0.0.1 works with any ids. IPv6 is not covered (IPv4 DHT only).

use core::net::Ipv4Addr;

use super::NodeId;

/// BEP 42: the IPv4 bits that enter the hash.
const V4_MASK: [u8; 4] = [0x03, 0x0f, 0x3f, 0xff];

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: BEP 42
/// hashes 4 bytes per check, so a table buys nothing.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// The crc32c BEP 42 derives from `ip` and `r` (only `r & 7` is used).
fn prefix(ip: Ipv4Addr, r: u8) -> u32 {
    let mut b = ip.octets();
    for (o, m) in b.iter_mut().zip(V4_MASK) {
        *o &= m;
    }
    if let Some(first) = b.first_mut() {
        *first |= (r & 7) << 5;
    }
    crc32c(&b)
}

/// True when BEP 42 exempts `ip` from the id check (not a public address).
pub fn is_exempt(ip: Ipv4Addr) -> bool {
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.octets().first().is_some_and(|&o| o >= 224)
}

/// Does `id` satisfy BEP 42 for `ip`? First 21 bits equal the crc32c of the
/// masked address with `r = id[19] & 7`. Exempt addresses always pass.
pub fn is_valid(id: &NodeId, ip: Ipv4Addr) -> bool {
    if is_exempt(ip) {
        return true;
    }
    let [a, b, c, .., last] = id.0;
    let [ca, cb, cc, _] = prefix(ip, last).to_be_bytes();
    a == ca && b == cb && (c & 0xf8) == (cc & 0xf8)
}

/// A BEP 42 id for our external `ip`: `random` fills the free bits (bytes
/// 2's low 3 bits, 3..19) and its last byte is `r`.
pub fn generate(ip: Ipv4Addr, random: [u8; 20]) -> NodeId {
    let mut id = random;
    let r = random.last().copied().unwrap_or(0);
    let [ca, cb, cc, _] = prefix(ip, r).to_be_bytes();
    let [a, b, c, ..] = &mut id;
    *a = ca;
    *b = cb;
    *c = (cc & 0xf8) | (*c & 7);
    NodeId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> NodeId {
        let mut id = [0u8; 20];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        NodeId(id)
    }

    /// BEP 42's test vectors: (IP, rand, example node id).
    const VECTORS: [([u8; 4], u8, &str); 5] = [
        (
            [124, 31, 75, 21],
            1,
            "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401",
        ),
        (
            [21, 75, 31, 124],
            86,
            "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256",
        ),
        (
            [65, 23, 51, 170],
            22,
            "a5d43220bc8f112a3d426c84764f8c2a1150e616",
        ),
        (
            [84, 124, 73, 14],
            65,
            "1b0321dd1bb1fe518101ceef99462b947a01ff41",
        ),
        (
            [43, 213, 53, 83],
            90,
            "e56f6cbf5b7c4be0237986d5243b87aa6d51305a",
        ),
    ];

    #[test]
    fn dht_bep42_crc32c_check_value() {
        // The standard CRC-32C check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn dht_bep42_vectors_validate_and_regenerate() {
        for (ip, r, id) in VECTORS {
            let ip = Ipv4Addr::from(ip);
            let id = hex(id);
            assert_eq!(id.0[19], r);
            assert!(is_valid(&id, ip), "{ip}");
            // Same random bits → the same id.
            assert_eq!(generate(ip, id.0), id, "{ip}");
            // One flipped bit in the 21-bit prefix fails.
            for bit in 0..21 {
                let mut bad = id;
                bad.0[bit / 8] ^= 0x80 >> (bit % 8);
                assert!(!is_valid(&bad, ip), "{ip} bit {bit}");
            }
            // Bits past 21 are free.
            let mut free = id;
            free.0[2] ^= 0x07;
            free.0[10] ^= 0xff;
            assert!(is_valid(&free, ip));
            // Another public address does not match.
            assert!(!is_valid(&id, Ipv4Addr::new(8, 8, 8, 8)));
        }
    }

    #[test]
    fn dht_bep42_local_addresses_exempt() {
        let any = NodeId([0x42; 20]);
        for ip in [
            [127, 0, 0, 1],
            [10, 1, 2, 3],
            [192, 168, 0, 9],
            [172, 16, 5, 5],
            [169, 254, 1, 1],
        ] {
            assert!(is_valid(&any, Ipv4Addr::from(ip)));
        }
        assert!(!is_valid(&any, Ipv4Addr::new(124, 31, 75, 21)));
    }
}
