//! Users and sessions: accounts with roles and claims, sign-in with a session cookie, what a
//! session may do, cross-site writes refused, sign-in limits, and the six `admin.*` events
//! written with each change.

use std::time::Duration;

use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

use testkit::event_tap::EventTap;
use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, TestApi};

const ALICE_PASSWORD: &str = "alice's long passphrase";
const BOB_PASSWORD: &str = "bob's own passphrase";

/// A browser-like client of one user: the session cookie it was given, and this site's origin
/// on its writes.
struct Browser {
    api: Api,
    cookie: String,
}

impl Browser {
    async fn sign_in(api: &Api, username: &str, password: &str) -> (Self, Value) {
        let response = sign_in(api, username, password).await;
        assert_eq!(response.status(), 200);
        let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "plain HTTP without secure_cookies: {set_cookie}");
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        assert!(cookie.starts_with("forecast_session="), "{cookie}");
        (Self { api: api.clone(), cookie }, response.json().await.unwrap())
    }

    fn origin(&self) -> String {
        self.api.base.trim_end_matches('/').to_owned()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.api.http.request(method.clone(), self.api.url(path)).header(COOKIE, &self.cookie);
        if method == reqwest::Method::GET { request } else { request.header(ORIGIN, self.origin()) }
    }

    async fn create_forecast(&self, summary: &str) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/api/weatherforecast")
            .json(&json!({ "date": "2026-12-10", "temperatureC": 3, "summary": summary }))
            .send()
            .await
            .unwrap()
    }

    async fn whoami(&self) -> reqwest::Response {
        self.request(reqwest::Method::GET, "/api/session").send().await.unwrap()
    }
}

async fn sign_in(api: &Api, username: &str, password: &str) -> reqwest::Response {
    api.http
        .post(api.url("/api/session"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

/// The first column of the first row of `sql`, read from the service's database.
async fn stored_text(url: &str, sql: &'static str) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
    sqlx::Row::try_get(&row, 0).unwrap()
}

async fn register(api: &Api, body: Value) -> reqwest::Response {
    api.post("/api/users", ADMIN_KEY).json(&body).send().await.unwrap()
}

on_both_databases!(users_sign_in_act_with_their_role_and_every_change_is_an_admin_event);

async fn users_sign_in_act_with_their_role_and_every_change_is_an_admin_event(db: DbKind) {
    let TestApi { redis, db: test_db, process, api } = TestApi::start(db).await;
    let tap = EventTap::log(&redis).await;

    // An admin registers two users; the username is unique.
    let alice = register(
        &api,
        json!({ "username": "alice", "password": ALICE_PASSWORD, "role": "editor", "claims": { "region": "eu" } }),
    )
    .await;
    assert_eq!(alice.status(), 201);
    let alice: Value = alice.json().await.unwrap();
    assert_eq!((alice["role"].as_str(), &alice["claims"]), (Some("editor"), &json!({ "region": "eu" })));
    let bob: Value =
        register(&api, json!({ "username": "bob", "password": BOB_PASSWORD })).await.json().await.unwrap();
    assert_eq!(bob["role"], "viewer", "the default role");
    let taken = register(&api, json!({ "username": "bob", "password": "another passphrase" })).await;
    assert_eq!(taken.status(), 409);
    let invalid = register(&api, json!({ "username": "B o b", "password": "short", "role": "root" })).await;
    assert_eq!(invalid.status(), 400, "{:?}", invalid.text().await);
    let listed: Value =
        api.get("/api/users").bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|user| user["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(!listed.to_string().contains("argon2"), "no password hash is ever shown");

    // Alice signs in; her session acts as an editor, from this site only.
    let (alice_browser, signed_in) = Browser::sign_in(&api, "alice", ALICE_PASSWORD).await;
    assert_eq!(signed_in["user"]["username"], "alice");
    let me: Value = alice_browser.whoami().await.json().await.unwrap();
    assert_eq!(
        (me["user"]["username"].as_str(), me["user"]["role"].as_str()),
        (Some("alice"), Some("editor"))
    );
    let created = alice_browser.create_forecast("By alice").await;
    assert_eq!(created.status(), 201);
    let forecast: Value = created.json().await.unwrap();
    let no_origin = api
        .http
        .post(api.url("/api/weatherforecast"))
        .header(COOKIE, &alice_browser.cookie)
        .json(&json!({ "date": "2026-12-10", "temperatureC": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403, "a cookie write without Origin");
    let cross_site = api
        .http
        .post(api.url("/api/weatherforecast"))
        .header(COOKIE, &alice_browser.cookie)
        .header(ORIGIN, "https://evil.example")
        .json(&json!({ "date": "2026-12-10", "temperatureC": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403, "a cookie write from another site");
    assert!(cross_site.text().await.unwrap().contains("Origin"));
    let users_as_editor = alice_browser.request(reqwest::Method::GET, "/api/users").send().await.unwrap();
    assert_eq!(users_as_editor.status(), 403, "an editor does not manage users");

    // Bob, a viewer, reads but cannot write until an admin makes him an editor: a session
    // follows its user's role as it is now.
    let (bob_browser, _) = Browser::sign_in(&api, "bob", BOB_PASSWORD).await;
    assert_eq!(bob_browser.create_forecast("By bob").await.status(), 403);
    let bob_id = bob["id"].as_str().unwrap();
    let promoted = api
        .put(&format!("/api/users/{bob_id}/role"), ADMIN_KEY)
        .json(&json!({ "role": "editor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(promoted.status(), 200);
    assert_eq!(bob_browser.create_forecast("By bob").await.status(), 201);
    let claims = api
        .put(&format!("/api/users/{bob_id}/claims"), ADMIN_KEY)
        .json(&json!({ "claims": { "team": "ops" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(claims.json::<Value>().await.unwrap()["claims"], json!({ "team": "ops" }));
    let unknown =
        api.put("/api/users/nobody/role", ADMIN_KEY).json(&json!({ "role": "admin" })).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // Bob signs out: the cookie is cleared and the session is over, even if replayed.
    let signed_out = bob_browser.request(reqwest::Method::DELETE, "/api/session").send().await.unwrap();
    assert_eq!(signed_out.status(), 204);
    assert!(signed_out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(bob_browser.whoami().await.status(), 401);
    assert_eq!(bob_browser.create_forecast("after sign-out").await.status(), 401);

    // An admin ends Alice's sessions.
    let alice_id = alice["id"].as_str().unwrap();
    let revoked = api.delete(&format!("/api/users/{alice_id}/sessions"), ADMIN_KEY).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(alice_browser.whoami().await.status(), 401);

    // Each change wrote its event, in order, naming who caused it; no password anywhere.
    let events = tap.wait_for(12).await;
    let seen: Vec<(&str, Value)> =
        events.iter().map(|event| (event.channel.as_str(), event.json()["data"]["actor"].clone())).collect();
    let expected: Vec<(&str, Value)> = vec![
        ("admin.user.registered", json!("key:bootstrap")),
        ("admin.user.registered", json!("key:bootstrap")),
        ("admin.user.loggedin", json!("user:alice")),
        ("admin.session.created", json!("user:alice")),
        ("weatherforecast.created", json!("user:alice")),
        ("admin.user.loggedin", json!("user:bob")),
        ("admin.session.created", json!("user:bob")),
        ("admin.user.rolechanged", json!("key:bootstrap")),
        ("weatherforecast.created", json!("user:bob")),
        ("admin.user.claimchanged", json!("key:bootstrap")),
        ("admin.user.loggedout", json!("user:bob")),
        ("admin.user.loggedout", json!("key:bootstrap")),
    ];
    assert_eq!(seen, expected);
    let data = |i: usize| events[i].json()["data"].clone();
    assert_eq!(data(4)["id"], forecast["id"]);
    assert_eq!(
        (data(7)["role"].as_str(), data(7)["previousRole"].as_str()),
        (Some("editor"), Some("viewer"))
    );
    assert_eq!(data(9)["claims"], json!({ "team": "ops" }));
    assert_eq!(
        (data(10)["reason"].as_str(), data(11)["reason"].as_str()),
        (Some("signed out"), Some("sessions revoked"))
    );
    assert_eq!(data(2)["sessionId"], data(3)["sessionId"]);
    let everything = format!("{:?}{:?}", events, process.logs());
    for secret in [ALICE_PASSWORD, BOB_PASSWORD, &alice_browser.cookie[17..], &bob_browser.cookie[17..]] {
        assert!(!everything.contains(secret), "a password or session secret was published or logged");
    }
    let audit = process.logs().into_iter().filter(|line| line.contains("\"target\":\"audit\"")).count();
    assert_eq!(audit, 12, "every event is audited");

    // Stored: an Argon2id hash, and only the hash of each session's secret.
    let hash: String =
        stored_text(&test_db.url, "SELECT password_hash FROM users WHERE username = 'alice'").await;
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    let sessions: String = stored_text(&test_db.url, "SELECT secret_hash FROM sessions LIMIT 1").await;
    assert!(!alice_browser.cookie.contains(&sessions) && !bob_browser.cookie.contains(&sessions));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer_and_attempts_are_limited() {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::with(DbKind::Sqlite, |api| {
        api.env("AUTH__SIGN_IN_ATTEMPTS_PER_ACCOUNT", 3).env("AUTH__SIGN_IN_ATTEMPTS_PER_ADDRESS", 4)
    })
    .await;
    assert_eq!(
        register(&api, json!({ "username": "alice", "password": ALICE_PASSWORD })).await.status(),
        201
    );

    let wrong = sign_in(&api, "alice", "not her passphrase").await;
    let unknown = sign_in(&api, "mallory", "any passphrase at all").await;
    assert_eq!((wrong.status().as_u16(), unknown.status().as_u16()), (401, 401));
    let (wrong, unknown): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(wrong, unknown, "nothing tells an unknown user from a wrong password");

    // Alice's account has had 1 attempt: two more, then even the right password waits.
    assert_eq!(sign_in(&api, "alice", "guess two").await.status(), 401);
    assert_eq!(sign_in(&api, "alice", ALICE_PASSWORD).await.status(), 200);
    let limited = sign_in(&api, "alice", ALICE_PASSWORD).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    // This address has made its 4 attempts (refused ones do not count): another account waits too.
    assert_eq!(sign_in(&api, "carol", "another passphrase").await.status(), 429);

    // A sign-in posted from another site is refused before any password is checked.
    let forged = api
        .http
        .post(api.url("/api/session"))
        .header(ORIGIN, "https://evil.example")
        .json(&json!({ "username": "alice", "password": ALICE_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registration_creates_viewers_and_sessions_expire() {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::with(DbKind::Sqlite, |api| {
        api.env("AUTH__OPEN_REGISTRATION", true).env("AUTH__SESSION_TTL_SECS", 1)
    })
    .await;
    let anonymous = |body: Value| {
        let api = api.clone();
        async move { api.http.post(api.url("/api/users")).json(&body).send().await.unwrap() }
    };
    let dave = anonymous(json!({ "username": "dave", "password": "dave's passphrase" })).await;
    assert_eq!(dave.status(), 201);
    assert_eq!(dave.json::<Value>().await.unwrap()["role"], "viewer");
    let admin =
        anonymous(json!({ "username": "eve", "password": "eve's passphrase", "role": "admin" })).await;
    assert_eq!(admin.status(), 403, "open registration grants no role");

    let (dave, _) = Browser::sign_in(&api, "dave", "dave's passphrase").await;
    assert_eq!(dave.whoami().await.status(), 200);
    testkit::eventually(Duration::from_secs(10), "the session to expire", || async {
        (dave.whoami().await.status() == 401).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_open_registration_only_an_admin_registers_users() {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::start(DbKind::Sqlite).await;
    let anonymous = api
        .http
        .post(api.url("/api/users"))
        .json(&json!({ "username": "dave", "password": "dave's passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let editor_key: Value = api
        .post("/api/admin/apikeys", ADMIN_KEY)
        .json(&json!({ "name": "ci", "scopes": ["forecasts:write"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_editor = api
        .post("/api/users", editor_key["key"].as_str().unwrap())
        .json(&json!({ "username": "dave", "password": "dave's passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(by_editor.status(), 403);
}
