//! The controller's own request and response bodies (the shared message types live in
//! `srmig-api`; these add what only the controller's HTTP surface needs). See
//! `docs/controller-api.md` for the endpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use srmig_api::{HostId, HostInfo, HypervisorEvent, MigrationId, VmInfo, VmState};

/// `POST /v1/hosts`: a host's [`HostInfo`] fields plus the path of its srmigd API socket.
///
/// Golden JSON:
/// ```json
/// {"name":"h1","locator":"fc00:1::/48","sid_end_s":"fc00:1::e5","sid_end_sbuf":"fc00:1::eb",
///  "sid_dt6":"fc00:1::d6","underlay":"2001:db8:ff::1","api_socket":"/run/srmig/h1.sock"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRegistration {
    /// The host itself (its fields appear at the top level of the JSON object; unknown fields
    /// are refused).
    #[serde(flatten)]
    pub info: HostInfo,
    /// `api_socket`: where the host's srmigd serves its API (`PUT /v1/config` is sent there).
    pub api_socket: PathBuf,
}

impl<'de> Deserialize<'de> for HostRegistration {
    /// `#[serde(flatten)]` would silently accept unknown fields (the flattened struct's
    /// `deny_unknown_fields` does not apply), so the object is split by hand.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let socket = map
            .remove("api_socket")
            .ok_or_else(|| D::Error::missing_field("api_socket"))?;
        let api_socket: PathBuf = serde_json::from_value(socket)
            .map_err(|e| D::Error::custom(format_args!("api_socket: {e}")))?;
        let info: HostInfo =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(HostRegistration { info, api_socket })
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
        assert_eq!(reg.api_socket, PathBuf::from("/run/srmig/h1.sock"));
        assert_eq!(serde_json::to_string(&reg).expect("serialize"), GOLDEN_HOST);
    }

    #[test]
    fn host_registration_refuses_unknown_and_missing_fields() {
        let typo = GOLDEN_HOST.replace("\"underlay\"", "\"underlay_addr\"");
        assert!(serde_json::from_str::<HostRegistration>(&typo).is_err());
        let extra = GOLDEN_HOST.replace("{\"name\"", "{\"colour\":\"red\",\"name\"");
        assert!(serde_json::from_str::<HostRegistration>(&extra).is_err());
        let no_socket = GOLDEN_HOST.replace(",\"api_socket\":\"/run/srmig/h1.sock\"", "");
        let err = serde_json::from_str::<HostRegistration>(&no_socket).expect_err("missing");
        assert!(err.to_string().contains("api_socket"), "{err}");
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
}
