//! The shards of a Redis Cluster, for restart safety: which master serves which slots,
//! and who that master is. A shard whose master restarted empty (or was replaced by a
//! failover) has forgotten the locks on its slots, exactly like a standalone node, so it
//! is judged the same way, per shard (see [`crate::engine::trust`]).

use std::time::Instant;

use redis::Value;

use crate::engine::identity::{Identity, RECORDS_KEY};
use crate::engine::scripts::hash_slot;

/// One shard: the slot ranges its master serves, and the master's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub ranges: Vec<(u16, u16)>,
    /// The master's `host:port`.
    pub addr: String,
    pub identity: Identity,
}

impl Shard {
    /// How records name the shard: by its slots, which a failover keeps (its master's
    /// address and run_id change), e.g. `slots 0-5460`.
    pub fn name(&self) -> String {
        let ranges: Vec<String> = self
            .ranges
            .iter()
            .map(|(from, to)| format!("{from}-{to}"))
            .collect();
        format!("slots {}", ranges.join(","))
    }

    /// The slot ranges a record's name ([`Shard::name`]) gives; `None` for a name that is
    /// not a shard's.
    pub fn ranges_named(name: &str) -> Option<Vec<(u16, u16)>> {
        name.strip_prefix("slots ")?
            .split(',')
            .map(|range| {
                let (from, to) = range.split_once('-')?;
                Some((from.parse().ok()?, to.parse().ok()?))
            })
            .collect()
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.ranges
            .iter()
            .any(|(from, to)| (*from..=*to).contains(&slot))
    }

    /// The key, in the same cluster but on *another* shard, that records which master
    /// clients trusted for this one: a shard that restarted empty lost its own keys, not
    /// this one. Every client picks the same key for the same slots. `None` for a shard
    /// that serves every slot (a cluster of one master has no other shard).
    pub fn record_key(&self) -> Option<String> {
        (0..256)
            .map(|n| match n {
                0 => RECORDS_KEY.to_string(),
                n => format!("{RECORDS_KEY}:{n}"),
            })
            .find(|key| !self.serves(hash_slot(key)))
    }
}

/// The shards of a cluster from a `CLUSTER SLOTS` reply and the `INFO server` replies of
/// its masters (a map from `host:port`, as the cluster connection routes to all masters).
/// A master without a usable `INFO` reply (down, or new since `CLUSTER SLOTS`) has no
/// shard: its slots are not trusted (no acquire counts their votes) until a later read
/// finds it, and the other shards are judged as usual. `Err` says what did not fit: a
/// reply of another shape, or `NOPERM` (the ACL forbids `INFO`).
pub fn parse_shards(slots: &Value, infos: &Value, now: Instant) -> Result<Vec<Shard>, String> {
    let Value::Array(entries) = slots else {
        return Err("CLUSTER SLOTS: not an array".into());
    };
    let infos: Vec<(String, Option<String>)> = match infos {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(addr, info)| match text(info) {
                Err(e) if e.starts_with("NOPERM") => Err(e),
                info => Ok((text(addr)?, info.ok())),
            })
            .collect::<Result<_, String>>()?,
        _ => return Err("INFO from the masters: not a map".into()),
    };
    let mut shards: Vec<Shard> = Vec::new();
    for entry in entries {
        let (from, to, addr) = slot_entry(entry)?;
        if let Some(shard) = shards.iter_mut().find(|s| s.addr == addr) {
            shard.ranges.push((from, to));
            continue;
        }
        let info = infos
            .iter()
            .find(|(a, _)| *a == addr)
            .and_then(|(_, info)| info.as_ref());
        let Some(identity) = info.and_then(|info| Identity::parse(info, now)) else {
            continue;
        };
        shards.push(Shard {
            ranges: vec![(from, to)],
            addr,
            identity,
        });
    }
    if shards.is_empty() && !entries.is_empty() {
        // Not "nothing to check against" (an ACL that forbids INFO): nothing checked.
        return Err("no master of the cluster answered INFO".into());
    }
    for shard in &mut shards {
        shard.ranges.sort_unstable();
    }
    Ok(shards)
}

/// The addresses of the masters `CLUSTER SLOTS` names, each once, as `(host, port)`.
pub fn master_addrs(slots: &Value) -> Result<Vec<(String, u16)>, String> {
    let Value::Array(entries) = slots else {
        return Err("CLUSTER SLOTS: not an array".into());
    };
    let mut addrs: Vec<(String, u16)> = Vec::new();
    for entry in entries {
        let (_, _, master) = slot_master(entry)?;
        if !addrs.contains(&master) {
            addrs.push(master);
        }
    }
    Ok(addrs)
}

/// `[from, to, [host, port, ...], replicas...]` of `CLUSTER SLOTS`, the master as
/// `host:port`.
fn slot_entry(entry: &Value) -> Result<(u16, u16, String), String> {
    let (from, to, (host, port)) = slot_master(entry)?;
    Ok((from, to, format!("{host}:{port}")))
}

/// [`slot_entry`], the master as `(host, port)`.
fn slot_master(entry: &Value) -> Result<(u16, u16, (String, u16)), String> {
    let bad = || "CLUSTER SLOTS: an entry of another shape".to_string();
    let Value::Array(fields) = entry else {
        return Err(bad());
    };
    let (Some(Value::Int(from)), Some(Value::Int(to)), Some(Value::Array(master))) =
        (fields.first(), fields.get(1), fields.get(2))
    else {
        return Err(bad());
    };
    let (Some(host), Some(Value::Int(port))) = (master.first(), master.get(1)) else {
        return Err(bad());
    };
    let number = |n: i64| u16::try_from(n).map_err(|_| bad());
    let master = (text(host)?, number(*port)?);
    Ok((number(*from)?, number(*to)?, master))
}

fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        Value::ServerError(e) => Err(format!("{}: {}", e.code(), e.details().unwrap_or_default())),
        _ => Err("a reply of another type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_give_back_their_ranges() {
        let shard = Shard {
            ranges: vec![(0, 5460), (5462, 6000)],
            addr: "a:1".into(),
            identity: Identity {
                run_id: "x".into(),
                uptime: Duration::ZERO,
                seen_at: Instant::now(),
                promoted: false,
                peer: None,
            },
        };
        assert_eq!(
            Shard::ranges_named(&shard.name()),
            Some(shard.ranges.clone())
        );
        assert_eq!(Shard::ranges_named("127.0.0.1:6379"), None);
        assert_eq!(Shard::ranges_named("slots 1-x"), None);
    }
    use std::time::Duration;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(from: i64, to: i64, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(from),
            Value::Int(to),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]),
        ])
    }

    fn info(run_id: &str, uptime: u64) -> Value {
        bulk(&format!(
            "# Server\r\nrun_id:{run_id}\r\nuptime_in_seconds:{uptime}\r\n"
        ))
    }

    #[test]
    fn master_addrs_names_each_master_once() {
        let slots = Value::Array(vec![
            entry(10923, 16383, 7002),
            entry(0, 5460, 7000),
            entry(100, 200, 7002),
        ]);
        assert_eq!(
            master_addrs(&slots),
            Ok(vec![("127.0.0.1".into(), 7002), ("127.0.0.1".into(), 7000)])
        );
        assert!(master_addrs(&Value::Int(1)).is_err());
    }

    #[test]
    fn shards_group_the_ranges_of_each_master_with_its_identity() {
        let now = Instant::now();
        let slots = Value::Array(vec![
            entry(10923, 16383, 7002),
            entry(0, 5460, 7000),
            entry(5461, 10922, 7001),
            entry(100, 200, 7002),
        ]);
        let infos = Value::Map(vec![
            (bulk("127.0.0.1:7000"), info("a", 5)),
            (bulk("127.0.0.1:7001"), info("b", 6)),
            (bulk("127.0.0.1:7002"), info("c", 7)),
        ]);
        let shards = parse_shards(&slots, &infos, now).unwrap();
        assert_eq!(shards.len(), 3);
        let c = &shards[0];
        assert_eq!(c.addr, "127.0.0.1:7002");
        assert_eq!(c.ranges, vec![(100, 200), (10923, 16383)]);
        assert_eq!(c.name(), "slots 100-200,10923-16383");
        assert_eq!(c.identity.run_id, "c");
        assert_eq!(
            c.identity.uptime,
            Duration::from_secs(6),
            "7 s reported: at least 6 s"
        );
        assert!(c.serves(150) && c.serves(16383) && !c.serves(201));
    }

    #[test]
    fn a_master_without_info_has_no_shard_and_the_others_are_judged() {
        let slots = Value::Array(vec![entry(0, 8191, 7000), entry(8192, 16383, 7001)]);
        // 7000 is down (no reply in the map), or answered with an error.
        let loading = redis::parse_redis_value(b"-LOADING loading the dataset\r\n").unwrap();
        for infos in [
            Value::Map(vec![(bulk("127.0.0.1:7001"), info("b", 6))]),
            Value::Map(vec![
                (bulk("127.0.0.1:7000"), loading),
                (bulk("127.0.0.1:7001"), info("b", 6)),
            ]),
        ] {
            let shards = parse_shards(&slots, &infos, Instant::now()).unwrap();
            assert_eq!(shards.len(), 1, "only the master that answered");
            assert_eq!(shards[0].addr, "127.0.0.1:7001");
            assert!(!shards[0].serves(0) && shards[0].serves(8192));
        }
        // None answered: an error, not an empty list (which means "nothing to check").
        let none = Value::Map(vec![]);
        assert!(parse_shards(&slots, &none, Instant::now()).is_err());
        let slots = Value::Array(vec![entry(0, 16383, 7000)]);
        let noperm = redis::parse_redis_value(b"-NOPERM this user has no permissions\r\n").unwrap();
        let refused = Value::Map(vec![(bulk("127.0.0.1:7000"), noperm)]);
        let err = parse_shards(&slots, &refused, Instant::now()).unwrap_err();
        assert!(err.contains("NOPERM"), "{err}");
    }

    #[test]
    fn a_shard_records_its_master_on_another_shard() {
        let now = Instant::now();
        let id = Identity {
            run_id: "a".into(),
            uptime: Duration::ZERO,
            seen_at: now,
            promoted: false,
            peer: None,
        };
        let everything = Shard {
            ranges: vec![(0, 16383)],
            addr: "h:1".into(),
            identity: id.clone(),
        };
        // A single shard has no other shard to keep its record.
        assert_eq!(everything.record_key(), None);
        let holder = hash_slot(RECORDS_KEY);
        let owns_it = Shard {
            ranges: vec![(holder, holder)],
            addr: "h:2".into(),
            identity: id.clone(),
        };
        let key = owns_it.record_key().unwrap();
        assert_ne!(key, RECORDS_KEY);
        assert!(!owns_it.serves(hash_slot(&key)));
        let other = Shard {
            ranges: vec![(holder + 1, holder + 1)],
            addr: "h:3".into(),
            identity: id,
        };
        assert_eq!(other.record_key().as_deref(), Some(RECORDS_KEY));
    }
}
