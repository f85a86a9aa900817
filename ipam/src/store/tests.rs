use super::local::TMP_FILE;
use super::*;
use crate::network::NetworkSpec;
use crate::state::Container;
use std::fs;

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        id: random_id().unwrap(),
        network: "bridge".into(),
        created: now(),
        boot_id: "boot".into(),
        ..Default::default()
    }
}

#[test]
fn a_new_directory_has_the_predefined_networks_with_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("sub/dir")).unwrap();
    let first = store.load().unwrap();
    let again = Store::open(store.dir().unwrap()).unwrap().load().unwrap();
    assert_eq!(first, again);
    let bridge = store.network("bridge").unwrap();
    assert_eq!(bridge.gateway_cidr().as_deref(), Some("172.17.0.1/16"));
    assert_eq!(bridge.id.len(), 64);
    assert_ne!(bridge.id, first.network("host").unwrap().id);
}

#[test]
fn changes_persist_and_failed_changes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ip = store
        .update(|s| Ok(s.add_container(container("a"), None)?.ipv4))
        .unwrap();
    assert_eq!(ip, Some("172.17.0.2".parse().unwrap()));
    let err = store.update(|s| {
        s.add_container(container("b"), None)?;
        s.create_network(
            "bad",
            random_id()?,
            now(),
            &NetworkSpec {
                subnet: "172.17.5.0/24".into(),
                ..NetworkSpec::default()
            },
        )
        .map(|_| ())
    });
    assert!(matches!(err, Err(Error::Overlap { .. })));
    let state = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(state.containers.len(), 1, "b must not have been saved");
    assert!(!dir.path().join(TMP_FILE).exists());
}

#[test]
fn the_file_is_readable_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .update(|s| s.add_container(container("web"), None).map(|_| ()))
        .unwrap();
    let text = fs::read_to_string(store.state_path().unwrap()).unwrap();
    assert!(text.contains("\"subnet\": \"172.17.0.0/16\""), "{text}");
    assert!(text.contains("\"ipv4\": \"172.17.0.2\""), "{text}");
    assert!(text.contains("\"mac\": \"02:42:ac:11:00:02\""), "{text}");
}

#[test]
fn a_corrupt_file_is_named_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let path = store.state_path().unwrap();
    fs::write(&path, "{\"version\": 1, \"networks\": [").unwrap();
    let err = store.lock().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("the state file {} is corrupt", path.display())),
        "{err}"
    );
    assert!(err.contains("will not overwrite it"), "{err}");
    assert!(Store::open(dir.path()).unwrap().load().is_err());
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "{\"version\": 1, \"networks\": ["
    );

    // Valid JSON that breaks the rules is corrupt too.
    let mut state = Store::open(tempfile::tempdir().unwrap().path())
        .unwrap()
        .load()
        .unwrap();
    state.networks.retain(|n| n.name != "bridge");
    fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.contains("the predefined network bridge is missing"),
        "{err}"
    );
}

#[test]
fn an_overlay_mtu_written_by_earlier_builds_moves_to_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut doc = serde_json::to_value(store.load().unwrap()).unwrap();
    // As issue 17's first builds wrote an overlay network: the MTU among
    // the VXLAN settings.
    doc["networks"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "ov", "id": "o".repeat(64), "driver": "overlay", "created": "x",
            "ipam": {"subnet": "10.10.0.0/24", "gateway": "10.10.0.1"},
            "overlay": {"vni": 4096, "vxlan_port": 4789, "mtu": 8950}
        }));
    fs::write(store.state_path().unwrap(), doc.to_string()).unwrap();
    let ov = store.network("ov").unwrap();
    assert_eq!(ov.mtu, Some(8950));
    assert_eq!(ov.overlay().unwrap().vni, 4096);

    // An MTU out of range makes the document corrupt, whoever wrote it.
    let bad = doc["networks"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["name"] == "bridge")
        .unwrap();
    bad["mtu"] = 40.into();
    fs::write(store.state_path().unwrap(), doc.to_string()).unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.contains("network bridge: --mtu 40 is out of range"),
        "{err}"
    );
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    fs::write(store.state_path().unwrap(), r#"{"version": 99}"#).unwrap();
    assert!(matches!(
        store.load(),
        Err(Error::NewerVersion { found: 99, .. })
    ));
}

#[test]
fn explicit_dir_wins() {
    assert_eq!(state_dir(Some(Path::new("/x/y"))), PathBuf::from("/x/y"));
}
