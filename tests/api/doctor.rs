//! `authgate doctor` against a correctly configured authgate (every check passes) and against
//! deliberately broken ones (each failure named).

use authgate::cli::doctor::{Report, run};
use authgate::clock::{Clock, SystemClock};

use crate::both_backends;
use crate::helpers::{Backend, spawn_app, spawn_app_with, stub_upstream};

fn failed(report: &Report) -> Vec<&'static str> {
    report
        .checks
        .iter()
        .filter(|c| !c.ok && !c.skipped)
        .map(|c| c.name)
        .collect()
}

async fn healthy_deployment_passes_every_check(backend: Backend) {
    let app = spawn_app(backend).await;
    let report = run(&app.base, None, SystemClock.now()).await;
    assert_eq!(failed(&report), Vec::<&str>::new(), "{}", report.render());
    assert!(report.checks.len() >= 14);
    assert_eq!(
        app.store.list_clients().await.unwrap().len(),
        0,
        "the doctor's test clients were deleted"
    );
    assert!(report.render().contains("0 failed"));
}

async fn broken_configurations_are_named(backend: Backend) {
    let wrong = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_PUBLIC_URL", "https://wrong.example.com");
        stub_upstream(raw);
    })
    .await;
    let report = run(&wrong.base, None, SystemClock.now()).await;
    let f = failed(&report);
    assert!(
        f.contains(&"issuer identical everywhere")
            && f.contains(&"resource metadata (path-inserted)")
            && f.contains(&"401 challenge on POST /mcp"),
        "{}",
        report.render()
    );

    let no_cimd = spawn_app_with(backend, |raw| raw.set("AUTHGATE_CIMD", "false")).await;
    let report = run(&no_cimd.base, None, SystemClock.now()).await;
    assert_eq!(
        failed(&report),
        vec!["CIMD and \"none\" advertised"],
        "{}",
        report.render()
    );

    let no_cors = spawn_app_with(backend, |raw| raw.set("AUTHGATE_CORS", "false")).await;
    let report = run(&no_cors.base, None, SystemClock.now()).await;
    assert_eq!(
        failed(&report),
        vec!["CORS on the JSON endpoints"],
        "{}",
        report.render()
    );
}

async fn upstream_discovery_is_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let idp = crate::upstream::start_idp(
        "http://127.0.0.1:9/oauth/callback",
        "client_secret_post",
        true,
    )
    .await;
    let ok = run(&app.base, Some(&idp.issuer), SystemClock.now()).await;
    assert_eq!(failed(&ok), Vec::<&str>::new(), "{}", ok.render());
    let wrong_issuer = run(
        &app.base,
        Some(&format!("{}/", idp.issuer)),
        SystemClock.now(),
    )
    .await;
    assert_eq!(
        failed(&wrong_issuer),
        vec!["upstream discovery"],
        "{}",
        wrong_issuer.render()
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let unreachable = run(&app.base, Some(&dead_url), SystemClock.now()).await;
    assert_eq!(failed(&unreachable), vec!["upstream discovery"]);
    let nothing = run(
        &format!(
            "http://{}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        ),
        None,
        SystemClock.now(),
    )
    .await;
    assert!(
        failed(&nothing).len() >= 10,
        "an unreachable deployment fails nearly everything"
    );
}

async fn clients_delete_themselves_only_with_their_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = crate::flow::register_claude(&app).await;
    let url = app.url(&format!("/register/{}", client.id));
    let wrong = app
        .http
        .delete(&url)
        .basic_auth(&client.id, Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let other = crate::flow::register_claude(&app).await;
    let foreign = app
        .http
        .delete(&url)
        .basic_auth(&other.id, other.secret.as_deref())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 401, "one client cannot delete another");
    let none = app.http.delete(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(app.store.get_client(&client.id).await.unwrap().is_some());
    let ok = app
        .http
        .delete(&url)
        .basic_auth(&client.id, client.secret.as_deref())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    assert!(app.store.get_client(&client.id).await.unwrap().is_none());
}

both_backends!(
    healthy_deployment_passes_every_check,
    broken_configurations_are_named,
    upstream_discovery_is_checked,
    clients_delete_themselves_only_with_their_secret,
);
