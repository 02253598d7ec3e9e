//! The controller's own request and response bodies (the shared message types live in
//! `srmig-api`; these add what only the controller's HTTP surface needs). See
//! `docs/controller-api.md` for the endpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use srmig_api::{HostId, HostInfo, HypervisorEvent, MigrationId, VmInfo, VmState};

/// `POST /v1/hosts`: a host's [`HostInfo`] fields plus where its srmigd serves its API:
/// `api_address` (`host:port` of srmigd's mutual-TLS listener, `srmigd --listen`; the host's
/// certificate must be valid for that host part and name `srmig://host/<name>`), or
/// `api_socket` (the path of its unix socket: same machine only).
///
/// Golden JSON:
/// ```json
/// {"name":"h1","locator":"fc00:1::/48","sid_end_s":"fc00:1::e5","sid_end_sbuf":"fc00:1::eb",
///  "sid_dt6":"fc00:1::d6","underlay":"2001:db8:ff::1","api_address":"[2001:db8:100::1]:7443"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRegistration {
    /// The host itself (its fields appear at the top level of the JSON object; unknown fields
    /// are refused).
    #[serde(flatten)]
    pub info: HostInfo,
    /// Where its srmigd serves its API (`PUT /v1/config` is sent there).
    #[serde(flatten)]
    pub api: HostApi,
}

/// Where a host's srmigd serves its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostApi {
    /// `api_address`: `host:port` of its mutual-TLS listener (`[v6]:port`, `v4:port` or
    /// `name:port`).
    ApiAddress(String),
    /// `api_socket`: its unix socket (same machine).
    ApiSocket(PathBuf),
}

impl HostApi {
    /// For an address: (`host:port`, the host part: the name its certificate must be valid
    /// for). `None` for a socket.
    pub fn address(&self) -> Option<(&str, &str)> {
        match self {
            HostApi::ApiAddress(a) => Some((a.as_str(), split_host_port(a).ok()?.0)),
            HostApi::ApiSocket(_) => None,
        }
    }

    /// Checks the field: a non-empty socket path, or `host:port` with a port.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            HostApi::ApiSocket(p) if p.as_os_str().is_empty() => Err("api_socket is empty".into()),
            HostApi::ApiSocket(_) => Ok(()),
            HostApi::ApiAddress(a) => split_host_port(a).map(|_| ()),
        }
    }
}

impl std::fmt::Display for HostApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostApi::ApiAddress(a) => write!(f, "https://{a}"),
            HostApi::ApiSocket(p) => write!(f, "{}", p.display()),
        }
    }
}

/// `host:port` -> (`host` without IPv6 brackets, port): [`srmig_tls::split_host_port`], the
/// rule srmigd's and the CLI's `--controller https://HOST:PORT` follow too.
fn split_host_port(a: &str) -> Result<(&str, u16), String> {
    srmig_tls::split_host_port(a).map_err(|e| format!("api_address {e}"))
}

impl<'de> Deserialize<'de> for HostRegistration {
    /// `#[serde(flatten)]` would silently accept unknown fields (the flattened struct's
    /// `deny_unknown_fields` does not apply), so the object is split by hand.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let api = match (map.remove("api_address"), map.remove("api_socket")) {
            (Some(a), None) => HostApi::ApiAddress(
                serde_json::from_value(a)
                    .map_err(|e| D::Error::custom(format_args!("api_address: {e}")))?,
            ),
            (None, Some(s)) => HostApi::ApiSocket(
                serde_json::from_value(s)
                    .map_err(|e| D::Error::custom(format_args!("api_socket: {e}")))?,
            ),
            (Some(_), Some(_)) => {
                return Err(D::Error::custom(
                    "give either api_address or api_socket, not both",
                ))
            }
            (None, None) => return Err(D::Error::missing_field("api_address or api_socket")),
        };
        api.validate().map_err(D::Error::custom)?;
        let info: HostInfo =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(HostRegistration { info, api })
    }
}

/// `GET /v1/hosts` entry (and `POST /v1/hosts` reply): the registration plus push progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// The registration.
    #[serde(flatten)]
    pub registration: HostRegistration,
    /// `generation_pushed`: the generation of the last config the controller wants there.
    pub generation_pushed: u64,
    /// `generation_acked`: the highest generation the host acknowledged (0: none).
    pub generation_acked: u64,
    /// `last_push_error`: why the last push attempt failed, `null` after a success.
    pub last_push_error: Option<String>,
}

/// `GET /v1/vms` entry (and `POST /v1/vms` reply): the VM (its `host` is the current mapping),
/// its migration in progress, and the last state each host reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmView {
    /// The VM.
    #[serde(flatten)]
    pub info: VmInfo,
    /// `migration`: the migration in progress, `null` if none.
    pub migration: Option<MigrationId>,
    /// `states`: host -> last reported state there (hosts that never reported are absent).
    pub states: BTreeMap<HostId, VmState>,
}

/// The event kinds accepted by `POST /v1/migrations/{id}/hypervisor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HypervisorEventKind {
    /// The hypervisor finished the migration.
    Completed,
    /// The migration failed; the VM keeps running on the source.
    Failed,
    /// The migration was cancelled; the VM keeps running on the source.
    Cancelled,
}

/// `POST /v1/migrations/{id}/hypervisor` body: what the (external) hypervisor did.
///
/// Golden JSON: `{"event":"failed","reason":"link to destination lost"}`; `reason` is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorPost {
    /// `event`: `completed`, `failed` or `cancelled`.
    pub event: HypervisorEventKind,
    /// `reason`: for `failed`, why (optional, informational for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl HypervisorPost {
    /// The core's event for this post.
    pub fn to_event(&self) -> HypervisorEvent {
        match self.event {
            HypervisorEventKind::Completed => HypervisorEvent::Completed,
            HypervisorEventKind::Failed => HypervisorEvent::Failed(
                self.reason
                    .clone()
                    .unwrap_or_else(|| "no reason given".to_owned()),
            ),
            HypervisorEventKind::Cancelled => HypervisorEvent::Cancelled,
        }
    }
}

/// `GET /v1/info`: what this controller runs with, so a client can explain what a migration
/// waits for (the hypervisor driver) and how long the controller waits before it gives up.
///
/// Golden JSON:
/// ```json
/// {"version":"0.1.0","driver":"external","driver_waits_for":"...","ack_timeout_ms":5000,
///  "hypervisor_timeout_ms":600000,"cancel_grace_ms":30000}
/// ```
/// Clients ignore fields they do not know (later controllers may add some).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerInfo {
    /// `version`: the controller's version (`srmig-controller`'s crate version).
    pub version: String,
    /// `driver`: the hypervisor driver's name (`external`, `qmp`).
    pub driver: String,
    /// `driver_waits_for`: what a migration in `expect-hypervisor-done` waits for with this
    /// driver, as a sentence fragment ("an outside party ... to move the VM ...").
    pub driver_waits_for: String,
    /// `ack_timeout_ms`: how long hosts have to acknowledge a config in a prepare phase
    /// before the migration rolls back (commit, rollback and cleanup re-push instead).
    pub ack_timeout_ms: u64,
    /// `hypervisor_timeout_ms`: how long the hypervisor may take before the controller
    /// cancels the migration.
    pub hypervisor_timeout_ms: u64,
    /// `cancel_grace_ms`: how long a cancelled hypervisor has to confirm.
    pub cancel_grace_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_HOST: &str = concat!(
        r#"{"name":"h1","locator":"fc00:1::/48","sid_end_s":"fc00:1::e5","sid_end_sbuf":"fc00:1::eb","#,
        r#""sid_dt6":"fc00:1::d6","underlay":"2001:db8:ff::1","api_socket":"/run/srmig/h1.sock"}"#
    );

    #[test]
    fn host_registration_golden_json() {
        let reg: HostRegistration = serde_json::from_str(GOLDEN_HOST).expect("deserialize");
        assert_eq!(reg.info.name.as_str(), "h1");
        assert_eq!(
            reg.api,
            HostApi::ApiSocket(PathBuf::from("/run/srmig/h1.sock"))
        );
        assert_eq!(serde_json::to_string(&reg).expect("serialize"), GOLDEN_HOST);
        let tcp = GOLDEN_HOST.replace(
            r#""api_socket":"/run/srmig/h1.sock""#,
            r#""api_address":"[2001:db8:100::1]:7443""#,
        );
        let reg: HostRegistration = serde_json::from_str(&tcp).expect("address");
        assert_eq!(
            reg.api.address(),
            Some(("[2001:db8:100::1]:7443", "2001:db8:100::1"))
        );
        assert_eq!(serde_json::to_string(&reg).expect("serialize"), tcp);
        for (bad, why) in [
            ("2001:db8::1:7443", "brackets"),
            ("h1", "no port"),
            ("h1:0", "port 0"),
            (":7443", "no host"),
            ("h1:https", "not a number"),
        ] {
            let j = GOLDEN_HOST.replace(
                r#""api_socket":"/run/srmig/h1.sock""#,
                &format!(r#""api_address":"{bad}""#),
            );
            let e = serde_json::from_str::<HostRegistration>(&j).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let both =
            GOLDEN_HOST.replace(r#""api_socket""#, r#""api_address":"h1:7443","api_socket""#);
        let e = serde_json::from_str::<HostRegistration>(&both).expect_err("both");
        assert!(e.to_string().contains("not both"), "{e}");
    }

    #[test]
    fn host_registration_refuses_unknown_and_missing_fields() {
        let typo = GOLDEN_HOST.replace("\"underlay\"", "\"underlay_addr\"");
        assert!(serde_json::from_str::<HostRegistration>(&typo).is_err());
        let extra = GOLDEN_HOST.replace("{\"name\"", "{\"colour\":\"red\",\"name\"");
        assert!(serde_json::from_str::<HostRegistration>(&extra).is_err());
        let no_socket = GOLDEN_HOST.replace(",\"api_socket\":\"/run/srmig/h1.sock\"", "");
        let err = serde_json::from_str::<HostRegistration>(&no_socket).expect_err("missing");
        assert!(
            err.to_string().contains("api_address or api_socket"),
            "{err}"
        );
        let bad_sid = GOLDEN_HOST.replace("fc00:1::e5", "fc00:1::zz");
        assert!(serde_json::from_str::<HostRegistration>(&bad_sid).is_err());
    }

    #[test]
    fn hypervisor_post_golden_json() {
        let golden = r#"{"event":"failed","reason":"link to destination lost"}"#;
        let post: HypervisorPost = serde_json::from_str(golden).expect("deserialize");
        assert_eq!(
            post.to_event(),
            HypervisorEvent::Failed("link to destination lost".into())
        );
        assert_eq!(serde_json::to_string(&post).expect("serialize"), golden);
        let done: HypervisorPost =
            serde_json::from_str(r#"{"event":"completed"}"#).expect("deserialize");
        assert_eq!(done.to_event(), HypervisorEvent::Completed);
        let bare: HypervisorPost =
            serde_json::from_str(r#"{"event":"failed"}"#).expect("deserialize");
        assert_eq!(
            bare.to_event(),
            HypervisorEvent::Failed("no reason given".into())
        );
        assert!(serde_json::from_str::<HypervisorPost>(r#"{"event":"done"}"#).is_err());
        assert!(serde_json::from_str::<HypervisorPost>(r#"{"event":"completed","x":1}"#).is_err());
    }

    #[test]
    fn controller_info_golden_json() {
        let golden = concat!(
            r#"{"version":"0.1.0","driver":"external","driver_waits_for":"someone","#,
            r#""ack_timeout_ms":5000,"hypervisor_timeout_ms":600000,"cancel_grace_ms":30000}"#
        );
        let info: ControllerInfo = serde_json::from_str(golden).expect("deserialize");
        assert_eq!(info.driver, "external");
        assert_eq!(info.hypervisor_timeout_ms, 600_000);
        assert_eq!(serde_json::to_string(&info).expect("serialize"), golden);
        // A later controller's extra field does not break an older client.
        let newer = golden.replace("{\"version\"", "{\"leader\":true,\"version\"");
        assert_eq!(
            serde_json::from_str::<ControllerInfo>(&newer).expect("deserialize"),
            info
        );
    }
}
