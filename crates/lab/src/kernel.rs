//! What the running kernel can do, for the tests and benches that compare srmig with Linux's
//! own SRv6 (seg6 headends, seg6local endpoints).

use std::process::{Command, Stdio};

/// Why Linux's SRv6 routes (`encap seg6`, `encap seg6local`) cannot be used on this kernel, if
/// its configuration (`/proc/config.gz`) says they are not built (`CONFIG_IPV6_SEG6_LWTUNNEL`
/// not set); `None` if they are, or if the kernel does not publish its configuration (the
/// comparison then runs and says for itself).
pub fn missing_srv6_lwtunnel() -> Option<String> {
    let out = Command::new("zcat")
        .arg("/proc/config.gz")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let config = String::from_utf8_lossy(&out.stdout);
    missing_in_config(&config)
}

fn missing_in_config(config: &str) -> Option<String> {
    config
        .lines()
        .any(|l| l.trim() == "# CONFIG_IPV6_SEG6_LWTUNNEL is not set")
        .then(|| {
            "this kernel has no SRv6 lightweight tunnels (CONFIG_IPV6_SEG6_LWTUNNEL is not set \
             in /proc/config.gz): Linux's seg6/seg6local routes, the reference srmig is compared \
             with, cannot be made"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_configuration_says_whether_srv6_routes_exist() {
        assert!(
            missing_in_config("CONFIG_IPV6=y\n# CONFIG_IPV6_SEG6_LWTUNNEL is not set\n")
                .is_some_and(|w| w.contains("CONFIG_IPV6_SEG6_LWTUNNEL"))
        );
        assert_eq!(missing_in_config("CONFIG_IPV6_SEG6_LWTUNNEL=y\n"), None);
        assert_eq!(missing_in_config(""), None);
    }
}
