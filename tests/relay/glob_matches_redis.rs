//! The relay's glob matcher must decide exactly as Redis does for PSUBSCRIBE: every generated
//! (pattern, channel) pair is published to a real redis-server and what it delivers is compared
//! with what the matcher says.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use protocol::glob::redis_match;

use testkit::redis_server::RedisServer;

/// The bytes that mean something to the matcher, plus plain letters and a two-byte UTF-8
/// character (whose bytes are negative as C `char`s).
fn glob_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"z".to_vec(), b".".to_vec()]),
        2 => prop::sample::select(vec![b"*".to_vec(), b"?".to_vec()]),
        2 => prop::sample::select(vec![b"[".to_vec(), b"]".to_vec(), b"^".to_vec(), b"-".to_vec()]),
        1 => Just(b"\\".to_vec()),
        1 => Just("é".as_bytes().to_vec()),
    ];
    prop::collection::vec(piece, 1..8).prop_map(|pieces| pieces.concat())
}

fn channel_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        b"a".to_vec(),
        b"b".to_vec(),
        b"z".to_vec(),
        b".".to_vec(),
        b"-".to_vec(),
        b"*".to_vec(),
        b"[".to_vec(),
        b"]".to_vec(),
        b"\\".to_vec(),
        "é".as_bytes().to_vec(),
    ]);
    prop::collection::vec(piece, 1..7).prop_map(|pieces| pieces.concat())
}

/// Asks Redis which of `patterns` deliver which of `channels`.
fn redis_deliveries(
    redis: &RedisServer,
    subscriber: &mut redis::Connection,
    patterns: &BTreeSet<Vec<u8>>,
    channels: &BTreeSet<Vec<u8>>,
) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    const END: &str = "glob-test.end";
    let mut pubsub = subscriber.as_pubsub();
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for pattern in patterns {
        pubsub.psubscribe(pattern).unwrap();
    }
    pubsub.subscribe(END).unwrap();

    let mut publisher = redis.connection();
    let mut pipeline = redis::pipe();
    for channel in channels {
        pipeline.cmd("PUBLISH").arg(channel).arg("x").ignore();
    }
    pipeline.cmd("PUBLISH").arg(END).arg("end").ignore();
    pipeline.query::<()>(&mut publisher).unwrap();

    let mut delivered = BTreeSet::new();
    loop {
        let message = pubsub.get_message().expect("message from redis");
        let channel: Vec<u8> = message.get_channel().unwrap();
        match message.get_pattern::<Option<Vec<u8>>>().unwrap() {
            Some(pattern) => {
                delivered.insert((pattern, channel));
            }
            None if channel == END.as_bytes() => break,
            None => {}
        }
    }
    pubsub.punsubscribe(patterns.iter().collect::<Vec<_>>()).unwrap();
    pubsub.unsubscribe(END).unwrap();
    delivered
}

fn expected(patterns: &BTreeSet<Vec<u8>>, channels: &BTreeSet<Vec<u8>>) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    patterns
        .iter()
        .flat_map(|p| channels.iter().map(move |c| (p.clone(), c.clone())))
        .filter(|(p, c)| redis_match(p, c))
        .collect()
}

fn show(pairs: &BTreeSet<(Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(p, c)| (String::from_utf8_lossy(p).into_owned(), String::from_utf8_lossy(c).into_owned()))
        .collect()
}

#[test]
fn the_matcher_agrees_with_redis_on_generated_patterns_and_channels() {
    let redis = RedisServer::start();
    let subscriber = std::cell::RefCell::new(redis.connection());
    let config = ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(
        patterns in prop::collection::btree_set(glob_bytes(), 1..16),
        channels in prop::collection::btree_set(channel_bytes(), 1..24),
    )| {
        let actual = redis_deliveries(&redis, &mut subscriber.borrow_mut(), &patterns, &channels);
        let wanted = expected(&patterns, &channels);
        prop_assert_eq!(
            show(&wanted),
            show(&actual),
            "left: the matcher, right: redis"
        );
    });
}

#[test]
fn the_matcher_agrees_with_redis_on_known_corner_cases() {
    let redis = RedisServer::start();
    let mut subscriber = redis.connection();
    let patterns: BTreeSet<Vec<u8>> = [
        "*", "a*", "*a", "a**", "[", "a[", "a[b", "[^a]", "[a-]", "[-a]", "[z-a]", "[\\]]", "[\\", "a\\",
        "\\*", "\\a", "[é]", "[a-é]", "?", "??", "*?*", "[]]", "[^]]", "a[^\\]]",
    ]
    .iter()
    .map(|p| p.as_bytes().to_vec())
    .collect();
    let channels: BTreeSet<Vec<u8>> =
        ["", "a", "b", "z", "aa", "ab", "-", "]", "[", "\\", "*", "é", "aé", "a]", "a[", "a\\", "y", "ba"]
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect();
    let actual = redis_deliveries(&redis, &mut subscriber, &patterns, &channels);
    let wanted = expected(&patterns, &channels);
    assert_eq!(show(&wanted), show(&actual), "left: the matcher, right: redis");
}
