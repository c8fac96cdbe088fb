use reqwest::Method;
use serde_json::Value;

use testkit::forecast_process::{ADMIN_KEY, DbKind, TestApi};

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    if_match: Option<&'static str>,
    body: String,
    status: u16,
    /// Words the problem's `detail` must contain.
    detail: &'static str,
    /// A field the problem's `errors` must name.
    field: Option<&'static str>,
}

fn case(name: &'static str, body: &str, status: u16, detail: &'static str) -> Case {
    Case {
        name,
        method: Method::POST,
        path: "/api/weatherforecast".into(),
        content_type: Some("application/json"),
        if_match: None,
        body: body.into(),
        status,
        detail,
        field: None,
    }
}

on_both_databases!(bad_input_is_a_4xx_problem_that_says_what_was_wrong);

async fn bad_input_is_a_4xx_problem_that_says_what_was_wrong(db: DbKind) {
    let TestApi { redis: _redis, db: _db, process: _process, api } =
        TestApi::with(db, |api| api.env("HTTP__MAX_BODY_BYTES", 1024)).await;
    let existing = api.create("2026-11-23", 20, "Mild").await;
    let existing_path = format!("/api/weatherforecast/{}", existing["id"].as_str().unwrap());
    let valid = r#"{"date":"2026-11-23","temperatureC":1}"#;

    let cases = vec![
        case("not JSON", "{date: tomorrow", 400, "not a valid request"),
        case("empty body", "", 400, "not a valid request"),
        case("JSON array", "[]", 400, "not a valid request"),
        case("missing date", r#"{"temperatureC":1}"#, 400, "missing field `date`"),
        case("missing temperature", r#"{"date":"2026-11-23"}"#, 400, "missing field `temperatureC`"),
        case(
            "unknown field",
            r#"{"date":"2026-11-23","temperatureC":1,"wind":3}"#,
            400,
            "unknown field `wind`",
        ),
        case("temperature as text", r#"{"date":"2026-11-23","temperatureC":"hot"}"#, 400, "invalid type"),
        case(
            "fractional temperature",
            r#"{"date":"2026-11-23","temperatureC":1.5}"#,
            400,
            "expected an integer",
        ),
        case("huge temperature", r#"{"date":"2026-11-23","temperatureC":1e400}"#, 400, "not a valid request"),
        case(
            "integer overflow",
            r#"{"date":"2026-11-23","temperatureC":99999999999999999999}"#,
            400,
            "not a valid",
        ),
        Case {
            field: Some("temperatureC"),
            ..case("too hot", r#"{"date":"2026-11-23","temperatureC":101}"#, 400, "between -100 and 100")
        },
        Case {
            field: Some("temperatureC"),
            ..case("too cold", r#"{"date":"2026-11-23","temperatureC":-101}"#, 400, "between -100 and 100")
        },
        Case {
            field: Some("date"),
            ..case("impossible date", r#"{"date":"2026-02-30","temperatureC":1}"#, 400, "YYYY-MM-DD")
        },
        Case {
            field: Some("date"),
            ..case("date with time", r#"{"date":"2026-11-23T10:00:00Z","temperatureC":1}"#, 400, "YYYY-MM-DD")
        },
        Case {
            field: Some("date"),
            ..case(
                "year out of range",
                r#"{"date":"1800-01-01","temperatureC":1}"#,
                400,
                "between 1900 and 2200",
            )
        },
        Case {
            field: Some("summary"),
            ..case(
                "blank summary",
                r#"{"date":"2026-11-23","temperatureC":1,"summary":"  "}"#,
                400,
                "must not be blank",
            )
        },
        Case {
            field: Some("summary"),
            ..case(
                "summary too long",
                &format!(r#"{{"date":"2026-11-23","temperatureC":1,"summary":"{}"}}"#, "é".repeat(201)),
                400,
                "at most 200",
            )
        },
        Case {
            field: Some("summary"),
            ..case(
                "control characters",
                r#"{"date":"2026-11-23","temperatureC":1,"summary":"a\u0007b"}"#,
                400,
                "control characters",
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..case("wrong content type", valid, 415, "application/json")
        },
        Case { content_type: None, ..case("no content type", valid, 415, "application/json") },
        case(
            "body too large",
            &format!(r#"{{"date":"2026-11-23","temperatureC":1,"summary":"{}"}}"#, "x".repeat(2000)),
            413,
            "too large",
        ),
        Case {
            method: Method::PUT,
            path: existing_path.clone(),
            if_match: Some("\"1"),
            ..case("unbalanced If-Match", valid, 400, "If-Match")
        },
        Case {
            method: Method::PUT,
            path: existing_path.clone(),
            if_match: Some("5a"),
            ..case("unquoted tag", valid, 400, "If-Match")
        },
        Case {
            method: Method::PUT,
            path: "/api/weatherforecast/no-such-id".into(),
            ..case("unknown id", valid, 404, "no such")
        },
        Case {
            method: Method::GET,
            path: "/api/weatherforecast?page=0".into(),
            ..case("page zero", "", 400, "page must be an integer from")
        },
        Case {
            method: Method::GET,
            path: "/api/weatherforecast?pageSize=101".into(),
            ..case("page too big", "", 400, "pageSize must be")
        },
        Case {
            method: Method::GET,
            path: "/api/weatherforecast?pageSize=ten".into(),
            ..case("page size text", "", 400, "pageSize must be")
        },
        Case {
            method: Method::GET,
            path: "/api/nothing".into(),
            ..case("unknown route", "", 404, "no route")
        },
        Case {
            method: Method::PATCH,
            path: existing_path.clone(),
            ..case("unsupported method", "", 405, "not allowed")
        },
    ];

    let mut failures = Vec::new();
    for case in cases {
        let mut request = api
            .http
            .request(case.method.clone(), api.url(&case.path))
            .bearer_auth(ADMIN_KEY)
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(if_match) = case.if_match {
            request = request.header("if-match", if_match);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let detail = problem["detail"].as_str().unwrap_or("");
        let ok = status == case.status
            && content_type.as_deref() == Some("application/problem+json")
            && problem["status"] == case.status
            && detail.contains(case.detail)
            && case.field.is_none_or(|field| problem["errors"][field].is_array());
        if !ok {
            failures.push(format!(
                "{}: expected {} {:?}, got {status} {content_type:?} {text}",
                case.name, case.status, case.detail
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing above changed anything.
    let unchanged: Value = api.get(&existing_path).send().await.unwrap().json().await.unwrap();
    assert_eq!(unchanged, existing);
}
