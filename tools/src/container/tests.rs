//! `container ls` and `container inspect` rendered from a state built in code.

use super::*;
use ipam::state::Predefined;

fn state_with(containers: &[(&str, &str)]) -> State {
    let mut state = State::new(Predefined {
        bridge_id: "b".repeat(64),
        host_id: "h".repeat(64),
        none_id: "n".repeat(64),
        created: String::new(),
    });
    for (name, network) in containers {
        let record = Container {
            name: name.to_string(),
            id: format!("{name:0<64}"),
            network: network.to_string(),
            sandbox: (*network != "host").then(|| sandbox_path(name)),
            host_iface: (*network == "bridge").then(|| format!("ts-{:0>12}", name)),
            ..Default::default()
        };
        state.add_container(record, None).unwrap();
    }
    state
}

#[test]
fn ls_shows_addresses_with_their_prefix() {
    let state = state_with(&[("web", "bridge"), ("solo", "none"), ("hostly", "host")]);
    assert_eq!(
        render_ls(&state, &Listening::new()),
        "CONTAINER ID   NAME      NETWORK   IPV4 ADDRESS    MAC ADDRESS         PORT\n\
         hostly000000   hostly    host      -               -                   -\n\
         solo00000000   solo      none      -               -                   -\n\
         web000000000   web       bridge    172.17.0.2/16   02:42:ac:11:00:02   ts-000000000web\n"
    );
}

#[test]
fn inspect_names_the_namespace_and_the_network() {
    let state = state_with(&[("web", "bridge")]);
    let view = inspect_view(&state, state.container("web").unwrap());
    let json: serde_json::Value = serde_json::from_str(&to_docker_json(&view).unwrap()).unwrap();
    assert_eq!(
        json["NetworkSettings"]["SandboxKey"],
        "/run/netns/tapswitch-web"
    );
    let bridge = &json["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(bridge["IPAddress"], "172.17.0.2");
    assert_eq!(bridge["IPPrefixLen"], 16);
    assert_eq!(bridge["Gateway"], "172.17.0.1");
    assert_eq!(bridge["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(json["Tapswitch"]["Port"], "ts-000000000web");
}

#[test]
fn ls_adds_a_ports_column_only_when_some_container_publishes() {
    let mut state = state_with(&[("web", "bridge"), ("solo", "none")]);
    let without = render_ls(&state, &Listening::new());
    assert!(!without.contains("PORTS"), "{without}");
    state.containers[1].ports = vec![
        "8080:80".parse().unwrap(),
        "127.0.0.1:5353:53/udp".parse().unwrap(),
    ];
    state.containers[1].control = Some(PathBuf::from("/run/web.sock"));
    // The running switch listens on both.
    let listening = live_listening(&state, "", &mut |_| {
        Some(vec![
            "0.0.0.0:8080->80/tcp".to_string(),
            "127.0.0.1:5353->53/udp".to_string(),
        ])
    });
    assert_eq!(
        render_ls(&state, &listening),
        "CONTAINER ID   NAME      NETWORK   IPV4 ADDRESS    MAC ADDRESS         PORT              PORTS\n\
         solo00000000   solo      none      -               -                   -                 -\n\
         web000000000   web       bridge    172.17.0.2/16   02:42:ac:11:00:02   ts-000000000web   0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp\n"
    );
}

#[test]
fn ls_shows_which_published_ports_the_running_switch_listens_on() {
    let mut state = state_with(&[("web", "bridge"), ("api", "bridge"), ("db", "bridge")]);
    for container in &mut state.containers {
        let port = match container.name.as_str() {
            "web" => "8080:80",
            "api" => "8081:80",
            _ => "5432:5432",
        };
        container.ports = vec![port.parse().unwrap(), "9000:9000/udp".parse().unwrap()];
    }
    let names: Vec<String> = state.containers.iter().map(|c| c.name.clone()).collect();
    // api and web share one switch; db's switch is not running.
    for container in &mut state.containers {
        container.control = Some(PathBuf::from(if container.name == "db" {
            "/run/db.sock"
        } else {
            "/run/bridge.sock"
        }));
    }
    let mut asked = Vec::new();
    let listening = live_listening(&state, "this-boot", &mut |path| {
        asked.push(path.to_path_buf());
        (path == Path::new("/run/bridge.sock")).then(|| {
            vec![
                "0.0.0.0:8080->80/tcp".to_string(),
                "0.0.0.0:8081->80/tcp".to_string(),
            ]
        })
    });
    assert_eq!(asked.len(), 2, "each switch asked once: {asked:?}");
    let text = render_ls(&state, &listening);
    let row = |name: &str| {
        let at = names.iter().position(|n| n == name).unwrap();
        text.lines().nth(at + 1).unwrap().to_string()
    };
    assert!(
        row("web").ends_with("0.0.0.0:8080->80/tcp, 0.0.0.0:9000->9000/udp (not listening)"),
        "{text}"
    );
    assert!(
        row("db").ends_with("0.0.0.0:5432->5432/tcp, 0.0.0.0:9000->9000/udp (switch not running)"),
        "{text}"
    );
    let json = ls_json(&state, &listening);
    let by_name = |name: &str| json.iter().find(|row| row["Name"] == name).unwrap().clone();
    assert_eq!(
        by_name("api")["PortsListening"],
        serde_json::json!(["0.0.0.0:8081->80/tcp"])
    );
    assert!(by_name("db")["PortsListening"].is_null());
    assert!(by_name("db")["Ports"].is_object());
}

#[test]
fn ls_does_not_ask_about_another_hosts_containers() {
    // On a shared store, a record of another boot is another host's: its
    // control socket's path names a switch there, not here.
    let mut state = state_with(&[("here", "bridge"), ("there", "bridge")]);
    for container in &mut state.containers {
        container.ports = vec!["8080:80".parse().unwrap()];
        container.control = Some(PathBuf::from("/run/tapswitch/ov.sock"));
        container.boot_id = format!("{}-boot", container.name);
    }
    let mut asked = 0;
    let listening = live_listening(&state, "here-boot", &mut |_| {
        asked += 1;
        Some(Vec::new())
    });
    assert_eq!(asked, 1);
    let text = render_ls(&state, &listening);
    let row = |name: &str| text.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert!(
        row("here").ends_with("0.0.0.0:8080->80/tcp (not listening)"),
        "{text}"
    );
    assert!(
        row("there").ends_with("0.0.0.0:8080->80/tcp"),
        "as recorded: {text}"
    );
    let json = ls_json(&state, &listening);
    let there = json.iter().find(|r| r["Name"] == "there").unwrap();
    assert!(there.get("PortsListening").is_none(), "{there}");
}

#[test]
fn inspect_shows_published_ports_in_dockers_shape() {
    let mut state = state_with(&[("web", "bridge"), ("plain", "bridge")]);
    let web = state
        .containers
        .iter_mut()
        .find(|c| c.name == "web")
        .unwrap();
    web.ports = vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()];
    let view = inspect_view(&state, state.container("web").unwrap());
    let json: serde_json::Value = serde_json::from_str(&to_docker_json(&view).unwrap()).unwrap();
    let expected = serde_json::json!({
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
    });
    assert_eq!(json["NetworkSettings"]["Ports"], expected);
    assert_eq!(json["HostConfig"]["PortBindings"], expected);
    // Without ports the view is what it was: no Ports keys at all.
    let plain = inspect_view(&state, state.container("plain").unwrap());
    let text = to_docker_json(&plain).unwrap();
    assert!(
        !text.contains("Ports") && !text.contains("PortBindings"),
        "{text}"
    );
}

#[test]
fn host_iface_names_fit_the_kernel_limit() {
    let id = random_id().unwrap();
    let name = format!("{HOST_IFACE_PREFIX}{}", &id[..12]);
    assert_eq!(name.len(), 15);
}
