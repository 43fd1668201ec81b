//! CIDR ranges for per-token IP allowlists.

use std::{fmt, net::IpAddr, str::FromStr};

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
///
/// INVARIANT: the prefix length fits the address family and the host bits are zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

/// A string that is not an address or CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range")]
pub struct IpNetParseError(pub String);

impl IpNet {
    /// Whether `ip` is in the range. IPv4-mapped IPv6 addresses match IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is in this range: the same family, a prefix at
    /// least as long, and the same network bits.
    pub fn contains_net(&self, other: &IpNet) -> bool {
        match (self.address, other.address) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                self.prefix <= other.prefix
                    && IpNet { address: other.address, prefix: self.prefix }.network() == self.address
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || IpNetParseError(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => {
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(error());
                }
                (address.parse::<IpAddr>().map_err(|_| error())?, Some(prefix.parse::<u8>().map_err(|_| error())?))
            }
            None => (text.parse::<IpAddr>().map_err(|_| error())?, None),
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(error());
        }
        let net = IpNet { address, prefix };
        // Host bits must be zero: `10.1.2.3/8` is refused rather than silently widened.
        if !net.contains(address) || net.network() != address {
            return Err(error());
        }
        Ok(net)
    }
}

impl IpNet {
    fn network(&self) -> IpAddr {
        match self.address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_their_addresses_only() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.255.1.2".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "192.168.1.7".parse().unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.1.2.3/8", "10.0.0.0/33", "nope", "10.0.0.0/", "10.0.0.0/+8", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_range_contains_the_ranges_inside_it_only() {
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        let ten = net("10.0.0.0/8");
        for inside in ["10.0.0.0/8", "10.1.0.0/16", "10.255.255.255", "10.128.0.0/9"] {
            assert!(ten.contains_net(&net(inside)), "{inside}");
        }
        for outside in ["10.0.0.0/7", "11.0.0.0/8", "0.0.0.0/0", "192.168.0.0/16", "::/0"] {
            assert!(!ten.contains_net(&net(outside)), "{outside}");
        }
        assert!(net("0.0.0.0/0").contains_net(&net("203.0.113.7")));
        assert!(net("2001:db8::/32").contains_net(&net("2001:db8:1::/48")));
        assert!(!net("2001:db8::/32").contains_net(&net("2001:db9::/48")));
        assert!(!net("2001:db8:1::/48").contains_net(&net("2001:db8::/32")));
        assert!(!net("::/0").contains_net(&net("10.0.0.0/8")));
    }
}
