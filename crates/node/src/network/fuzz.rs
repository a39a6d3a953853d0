//! Fuzz targets for the network's checks of what a tenant sends: a create's DNS servers,
//! extra hosts and published ports, security group files (YAML: anchors and aliases too),
//! subnets and links (proptest on stable, see `scripts/fuzz`).

use proptest::prelude::*;

use super::{guest_files, ipam, ports, sg};
use crate::fuzz_inputs::{create_body, parsed, word};
use crate::RuntimeError;

fn tenant_error(e: &RuntimeError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(e, RuntimeError::Invalid(m) if !m.is_empty()),
        "not a client error: {e:?}"
    );
    Ok(())
}

/// A security group file: YAML text from rule fields with values of any type, JSON, aliases
/// that repeat a node many times, and raw text.
fn sg_file() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        word(),
        prop::sample::select(vec![
            "ingress",
            "egress",
            "tcp",
            "UDP",
            "any",
            "~",
            "0",
            "1",
            "65535",
            "65536",
            "-1",
            "10.0.0.0/8",
            "10.0.0.1",
            "::/0",
            "[1, 2]",
            "{a: b}",
            "*a",
            "&a x",
            "!!binary aGk=",
            "\"quoted\"",
            "1e3",
            "0x50",
        ])
        .prop_map(String::from),
    ];
    let key = prop::sample::select(vec![
        "direction",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_group_name",
        "other",
    ]);
    let rule = prop::collection::vec((key, value.clone()), 0..6).prop_map(|kv| {
        let lines: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("  - {}", lines.join("\n    "))
    });
    let file =
        (prop::option::of(value), prop::collection::vec(rule, 0..4)).prop_map(|(name, rules)| {
            let mut out = String::new();
            if let Some(n) = name {
                out.push_str(&format!("name: {n}\n"));
            }
            out.push_str("rules:\n");
            out.push_str(&rules.join("\n"));
            out
        });
    // Billion laughs: each level is an alias list of the one before.
    let bomb = (2usize..12, 2usize..10).prop_map(|(levels, width)| {
        let mut out = String::from("a0: &a0 [x]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); width].join(", ");
            out.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        out.push_str(&format!("rules: *a{}\n", levels - 1));
        out
    });
    prop_oneof![6 => file, 1 => bomb, 1 => ".{0,64}"]
}

proptest! {
    /// A create's network asks: accepted, or refused as the tenant's error with a message;
    /// accepted ports are real ports, published at most once each.
    #[test]
    fn fuzz_network_checks(body in create_body()) {
        let Some((config, host_config)) = parsed(&body) else {
            return Ok(());
        };
        if let Err(e) = guest_files::validate(&host_config) {
            tenant_error(&e)?;
        }
        match ports::requests(&config, &host_config) {
            Ok(requests) => {
                for (i, r) in requests.iter().enumerate() {
                    prop_assert!(r.container_port > 0);
                    prop_assert!(r.proto == "tcp" || r.proto == "udp" || r.proto == "sctp", "{r:?}");
                    if let Some(p) = r.host_port {
                        prop_assert!(p > 0);
                        prop_assert!(!requests[..i].iter().any(|o| o.host_port == Some(p) && o.proto == r.proto));
                    }
                }
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
        for link in &host_config.links {
            let _ = guest_files::parse_link(link);
        }
    }

    /// A security group file: parsed and checked, or refused with a message; what is accepted
    /// has normalised rules.
    #[test]
    fn fuzz_security_group(file in sg_file(), name in prop_oneof![Just("web".to_string()), word()]) {
        match sg::parse(file.as_bytes(), &name) {
            Ok(g) => {
                prop_assert_eq!(&g.name, &name);
                for r in &g.rules {
                    prop_assert!(r.direction == "ingress" || r.direction == "egress");
                    prop_assert!(matches!(r.protocol.as_str(), "" | "tcp" | "udp" | "icmp"));
                    if let (Some(min), Some(max)) = (r.port_range_min, r.port_range_max) {
                        prop_assert!(min >= 1 && min <= max);
                    }
                }
            }
            Err(e) => tenant_error(&e)?,
        }
        if let Err(e) = sg::validate_name(&name) {
            tenant_error(&e)?;
        }
    }

    /// Subnets: accepted ones are network addresses with a usable prefix.
    #[test]
    fn fuzz_subnet(s in prop_oneof![word(), "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}"]) {
        match ipam::parse_subnet(&s) {
            Ok(net) => prop_assert!(net.trunc() == net && (8..=29).contains(&net.prefix_len())),
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }
}
