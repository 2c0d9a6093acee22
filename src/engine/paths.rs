//! Deterministic tests of the engine's hard paths, on in-process nodes (`MemoryStore`),
//! without servers: ties, split votes and their cleanup, stragglers taken back, deadlines,
//! validity running out, fence claims, and the order in which waiters are served.

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::engine::memory::MemoryStore;
    use crate::engine::node::Node;
    use crate::engine::quorum::FailureKind;
    use crate::engine::quorum::Vote;
    use crate::engine::redlock::{Call, LateVotes, Op, Quorum, Redlock};
    use crate::engine::settings::Settings;

    const TIMEOUT: Duration = Duration::from_millis(150);

    fn stores(n: usize) -> (Vec<Arc<MemoryStore>>, Redlock) {
        let stores: Vec<Arc<MemoryStore>> = (0..n)
            .map(|i| MemoryStore::new(format!("m{i}"), TIMEOUT))
            .collect();
        let nodes = stores
            .iter()
            .map(|s| Node::memory(s.clone(), TIMEOUT))
            .collect();
        let settings = Settings {
            retry_count: 0,
            ..Settings::default()
        };
        (stores, Redlock::new(Quorum::new(nodes), settings))
    }

    /// Sets `key` to another owner's value on `store`.
    async fn hold(store: &MemoryStore, key: &str) {
        let mut set = redis::cmd("SET");
        set.arg(key).arg("other").arg("PX").arg(10_000);
        store.execute(&set).await.unwrap();
    }

    fn keys(stores: &[Arc<MemoryStore>]) -> Vec<Vec<String>> {
        stores.iter().map(|s| s.keys()).collect()
    }

    #[tokio::test]
    async fn an_even_tie_is_lost_at_once_and_cleaned_up() {
        let (stores, redlock) = stores(4);
        hold(&stores[0], "k").await;
        hold(&stores[1], "k").await;
        let started = Instant::now();
        let settings = *redlock.settings();
        let (_, exec) = redlock
            .acquire(&["k".into()], 1_000, &Call::new(&settings))
            .await;
        assert_eq!(exec.outcome, Err(FailureKind::Locked));
        assert!(started.elapsed() < TIMEOUT, "no wait for a decided tie");
        assert_eq!(
            keys(&stores[2..]),
            vec![Vec::<String>::new(); 2],
            "our keys removed"
        );
    }

    #[tokio::test]
    async fn a_tie_retried_counts_its_attempts_and_leaves_nothing() {
        // The retries run the line's script, whose cleanup keeps the lock for the waiter's
        // own ticket: that must neither wake the waiter into retries that do not count
        // nor cut the retry delay (the tie lasts the retry window, as other failures do).
        let (stores, redlock) = stores(4);
        hold(&stores[0], "k").await;
        hold(&stores[1], "k").await;
        let settings = Settings {
            retry_count: 2,
            retry_delay_ms: 30,
            retry_jitter_ms: 0,
            ..*redlock.settings()
        };
        let started = Instant::now();
        let (_, exec) = redlock
            .acquire(&["k".into()], 1_000, &Call::new(&settings))
            .await;
        assert_eq!(exec.outcome, Err(FailureKind::Locked));
        assert_eq!(exec.attempt_count, 3);
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "two retry delays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(keys(&stores[2..]), vec![Vec::<String>::new(); 2]);
    }

    #[tokio::test]
    async fn a_split_vote_with_a_failure_is_undecided_and_cleaned_up() {
        let (stores, redlock) = stores(3);
        hold(&stores[0], "k").await;
        stores[1].down();
        let settings = *redlock.settings();
        let (_, exec) = redlock
            .acquire(&["k".into()], 1_000, &Call::new(&settings))
            .await;
        assert_eq!(exec.outcome, Err(FailureKind::Undecided));
        assert!(stores[2].keys().is_empty());
    }

    #[tokio::test]
    async fn a_straggler_that_lands_after_the_release_is_taken_back() {
        let (stores, redlock) = stores(3);
        // The third node gets the acquire late, after the release.
        stores[2].delay_next(60);
        let settings = *redlock.settings();
        let call = Call::new(&settings);
        let (value, exec) = redlock.acquire(&["k".into()], 5_000, &call).await;
        assert!(exec.outcome.is_ok());
        // Released while the third node's request still waits.
        let released = redlock.release(&["k".into()], &value, &call).await;
        assert!(released.outcome.is_ok());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(keys(&stores), vec![Vec::<String>::new(); 3]);
    }

    #[tokio::test]
    async fn an_attempt_never_waits_past_the_command_time_out() {
        let (stores, redlock) = stores(3);
        stores[0].pause(2_000);
        stores[1].pause(2_000);
        let started = Instant::now();
        let settings = *redlock.settings();
        let (_, exec) = redlock
            .acquire(&["k".into()], 10_000, &Call::new(&settings))
            .await;
        assert_eq!(exec.outcome, Err(FailureKind::Undecided));
        let took = started.elapsed();
        assert!(took >= TIMEOUT && took < TIMEOUT * 3, "{took:?}");
    }

    #[tokio::test]
    async fn a_release_stops_retrying_when_its_lock_expires_and_then_succeeds() {
        let (stores, redlock) = stores(3);
        let settings = Settings {
            retry_count: 10,
            ..*redlock.settings()
        };
        let (value, exec) = redlock
            .acquire(&["k".into()], 10_000, &Call::new(&settings))
            .await;
        assert!(exec.outcome.is_ok());
        stores[0].pause(5_000);
        stores[1].pause(5_000);
        // A lock that expires in 250 ms: retried until then (not for 11 attempts of the
        // command time-out each), then done: its keys are gone by themselves.
        let started = Instant::now();
        let expiration = crate::engine::redlock::now_ms() + 250.0;
        let released = redlock
            .release_by(&["k".into()], &value, expiration, &Call::new(&settings))
            .await;
        let took = started.elapsed();
        assert_eq!(released.outcome, Ok(0));
        assert!(released.attempts.len() >= 2, "retried until the expiration");
        assert!(
            took >= Duration::from_millis(240) && took < Duration::from_millis(600),
            "{took:?}"
        );
        // An expired lock: one short attempt.
        let started = Instant::now();
        let expired = crate::engine::redlock::now_ms() - 1.0;
        let released = redlock
            .release_by(&["k".into()], &value, expired, &Call::new(&settings))
            .await;
        assert_eq!(released.outcome, Ok(0));
        assert_eq!(released.attempts.len(), 1);
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
        // Unknown expiration (NaN: a Lock invalidated by its extend, whose keys live on):
        // the usual retries, and the failure they end in.
        let settings = Settings {
            retry_count: 1,
            retry_delay_ms: 10,
            ..settings
        };
        let released = redlock
            .release_by(&["k".into()], &value, f64::NAN, &Call::new(&settings))
            .await;
        assert_eq!(released.outcome, Err(FailureKind::Undecided));
        assert_eq!(released.attempts.len(), 2);
    }

    #[tokio::test]
    async fn no_lock_without_validity_left() {
        let (stores, redlock) = stores(3);
        // Every answer comes 30 ms late; a 20 ms lock has no validity left by then.
        stores.iter().for_each(|s| s.pause(30));
        let settings = *redlock.settings();
        let (_, exec) = redlock
            .acquire(&["k".into()], 20, &Call::new(&settings))
            .await;
        assert!(exec.outcome.is_err());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(keys(&stores), vec![Vec::<String>::new(); 3]);
    }

    #[tokio::test]
    async fn an_extend_stops_retrying_when_the_lock_expires() {
        let (stores, redlock) = stores(3);
        let settings = Settings {
            retry_count: 100,
            retry_delay_ms: 10,
            retry_jitter_ms: 0,
            ..*redlock.settings()
        };
        let call = Call::new(&settings);
        let (value, exec) = redlock.acquire(&["k".into()], 300, &call).await;
        assert!(exec.outcome.is_ok());
        stores[0].down();
        stores[1].down();
        let started = Instant::now();
        let extended = redlock
            .extend(&["k".into()], &value, 300, exec.expiration_ms, &call)
            .await;
        assert!(extended.outcome.is_err());
        // 100 retries of 10 ms would take a second; the lock had under 300 ms left.
        assert!(
            started.elapsed() < Duration::from_millis(320),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn fences_are_claimed_above_any_counter_a_quorum_holds() {
        let (stores, redlock) = stores(3);
        let mut set = redis::cmd("SET");
        set.arg("{k}:redlock-rs:fence").arg(41);
        stores[1].execute(&set).await.unwrap();
        let settings = Settings {
            fencing: true,
            ..*redlock.settings()
        };
        let call = Call::new(&settings);
        let (value, first) = redlock.acquire(&["k".into()], 1_000, &call).await;
        let f1 = first.fence.unwrap();
        redlock.release(&["k".into()], &value, &call).await;
        let (_, second) = redlock.acquire(&["k".into()], 1_000, &call).await;
        let f2 = second.fence.unwrap();
        assert!(f2 > f1, "{f1} then {f2}");
        assert!(f1 >= 1);
    }

    /// The complete votes the waiter of [`held_with_waiter`] gets late, if any.
    type LateReports = std::sync::mpsc::Receiver<Vec<Option<Vote>>>;

    /// `k` held on 3 stores, and a waiter for it (spawned) with `retry_count` retries
    /// `retry_delay_ms` apart: the stores, the quorum, the held value, the settings, the
    /// waiter and its late reports.
    async fn held_with_waiter(
        retry_count: i64,
        retry_delay_ms: u64,
    ) -> (
        Vec<Arc<MemoryStore>>,
        Arc<Redlock>,
        String,
        Settings,
        tokio::task::JoinHandle<(String, crate::engine::redlock::Execution)>,
        LateReports,
    ) {
        let (stores, redlock) = stores(3);
        let redlock = Arc::new(redlock);
        let settings = Settings {
            retry_count,
            retry_delay_ms,
            retry_jitter_ms: 0,
            ..*redlock.settings()
        };
        let (held, _) = redlock
            .acquire(&["k".into()], 5_000, &Call::new(&settings))
            .await;
        let (tx, reports) = std::sync::mpsc::channel();
        let waiter = {
            let redlock = redlock.clone();
            tokio::spawn(async move {
                let tx = std::sync::Mutex::new(tx);
                let late = move || -> LateVotes {
                    let tx = tx.lock().unwrap().clone();
                    Box::new(move |votes| {
                        let _ = tx.send(votes);
                    })
                };
                let call = Call {
                    late: Some(&late),
                    ..Call::new(&settings)
                };
                redlock.acquire(&["k".into()], 5_000, &call).await
            })
        };
        (stores, redlock, held, settings, waiter, reports)
    }

    #[tokio::test]
    async fn a_hand_over_won_before_every_node_moved_reports_the_rest_to_the_waiter_late() {
        let (stores, redlock, held, settings, waiter, reports) = held_with_waiter(10, 2_000).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        stores[2].delay_next(50);
        let released = redlock
            .release(&["k".into()], &held, &Call::new(&settings))
            .await;
        assert!(released.outcome.is_ok());
        let (_, exec) = waiter.await.unwrap();
        let handed = exec.attempts.back().unwrap();
        assert!(
            handed.late,
            "decided on two moves, the third still under way"
        );
        assert_eq!(handed.votes.iter().filter(|v| v.is_none()).count(), 1);
        let votes =
            tokio::task::spawn_blocking(move || reports.recv_timeout(Duration::from_secs(2)))
                .await
                .unwrap()
                .expect("the complete votes come late");
        assert_eq!(votes, vec![Some(Vote::For); 3]);
    }

    #[tokio::test]
    async fn a_hand_over_moves_the_lock_to_the_waiter_on_every_node_it_reaches() {
        let (stores, redlock, held, settings, waiter, _) = held_with_waiter(10, 2_000).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The third node gets its move late: the hand-over is won on the other two.
        stores[2].delay_next(50);
        let started = Instant::now();
        let released = redlock
            .release(&["k".into()], &held, &Call::new(&settings))
            .await;
        assert!(released.outcome.is_ok());
        let (value, exec) = waiter.await.unwrap();
        assert!(exec.outcome.is_ok());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "handed over, not retried"
        );
        assert_ne!(value, held);
        tokio::time::sleep(Duration::from_millis(80)).await;
        // The late move landed too: the lock is on all three nodes, with the new value.
        for s in &stores {
            let mut get = redis::cmd("GET");
            get.arg("k");
            assert_eq!(
                s.execute(&get).await.unwrap(),
                redis::Value::BulkString(value.clone().into_bytes())
            );
        }
    }

    #[tokio::test]
    async fn a_hand_over_that_cannot_move_the_lock_leaves_the_waiter_retrying() {
        let (stores, redlock, held, settings, waiter, _) = held_with_waiter(2, 40).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A thief takes the key everywhere: the hand-over moves nothing, and drops the
        // waiter's offer without an answer while the waiter still waits.
        for s in &stores {
            let mut set = redis::cmd("SET");
            set.arg("k").arg("thief").arg("PX").arg(10_000);
            s.execute(&set).await.unwrap();
        }
        redlock
            .release(&["k".into()], &held, &Call::new(&settings))
            .await;
        let (_, exec) = waiter.await.expect("the waiter did not panic");
        assert_eq!(exec.outcome, Err(FailureKind::Locked));
        assert_eq!(exec.attempts.len(), 3, "it went on retrying");
    }

    #[tokio::test]
    async fn a_tie_lasts_the_retry_window_with_waiters_of_other_processes_behind() {
        // Another owner keeps one of two nodes; two processes wait on the other. The first
        // in line finds its cleanup kept the free node for it (the second waits behind):
        // its quick retries (pauses of 2, 4, 8 ... ms while under the retry delay) must
        // not use up retryCount, whatever the jitter (as large as the delay here).
        let (stores, _) = stores(2);
        hold(&stores[0], "k").await;
        let settings = Settings {
            retry_count: 3,
            retry_delay_ms: 40,
            retry_jitter_ms: 40,
            ..Settings::default()
        };
        let waiters = [process(&stores), process(&stores)].map(|redlock| {
            tokio::spawn(async move {
                let (_, exec) = redlock
                    .acquire(&["k".into()], 1_000, &Call::new(&settings))
                    .await;
                (exec.outcome, exec.attempt_count)
            })
        });
        let mut attempts = Vec::new();
        for waiter in waiters {
            let (outcome, count) = waiter.await.unwrap();
            assert_eq!(outcome, Err(FailureKind::Locked));
            attempts.push(count);
        }
        // 4 counted attempts each; the first in line's quick ones (2, 4, 8, 16, 32 ms) on
        // top of its own.
        assert!(attempts.iter().all(|&a| a >= 4), "{attempts:?}");
        assert!(attempts.iter().any(|&a| a >= 4 + 5), "{attempts:?}");
    }

    /// A quorum of its own (a process of its own) over `stores`.
    fn process(stores: &[Arc<MemoryStore>]) -> Arc<Redlock> {
        let nodes = stores
            .iter()
            .map(|s| Node::memory(s.clone(), TIMEOUT))
            .collect();
        Arc::new(Redlock::new(Quorum::new(nodes), Settings::default()))
    }

    /// `k` held by `holder`; three waiters arrive `gap` apart, each on the quorum
    /// `waiter(i)` gives (the holder's: one process; another: a process of its own), then
    /// the holder releases, after `before_release` has looked at the stores. The order in
    /// which the waiters got the lock.
    async fn served_order(
        stores: &[Arc<MemoryStore>],
        holder: Arc<Redlock>,
        waiter: impl Fn(usize) -> Arc<Redlock>,
        gap: Duration,
        before_release: impl FnOnce(&[Arc<MemoryStore>]),
    ) -> Vec<usize> {
        let settings = Settings {
            retry_count: 500,
            retry_delay_ms: 10,
            retry_jitter_ms: 0,
            ..*holder.settings()
        };
        let (held, _) = holder
            .acquire(&["k".into()], 5_000, &Call::new(&settings))
            .await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (redlock, order) = (waiter(i), order.clone());
            tasks.push(tokio::spawn(async move {
                let call = Call::new(&settings);
                let (value, exec) = redlock.acquire(&["k".into()], 5_000, &call).await;
                assert!(exec.outcome.is_ok());
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                redlock.release(&["k".into()], &value, &call).await;
            }));
            tokio::time::sleep(gap).await;
        }
        before_release(stores);
        holder
            .release(&["k".into()], &held, &Call::new(&settings))
            .await;
        for t in tasks {
            t.await.unwrap();
        }
        // Every ticket left the line, the last holder released: nothing is left.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(keys(stores), vec![Vec::<String>::new(); 3]);
        let order = order.lock().unwrap().clone();
        order
    }

    #[tokio::test]
    async fn heads_of_other_processes_are_served_in_the_order_their_waits_began() {
        let (stores, holder) = stores(3);
        // Each waits long enough to take its place in the line.
        let in_line = |stores: &[Arc<MemoryStore>]| {
            for s in stores {
                let line = "{k}:redlock-rs:line".to_string();
                assert!(s.keys().contains(&line), "{:?}", s.keys());
            }
        };
        let others = stores.clone();
        let served = served_order(
            &stores,
            Arc::new(holder),
            |_| process(&others),
            Duration::from_millis(40),
            in_line,
        )
        .await;
        // Without the line, the heads race at each release and the order is left to chance.
        assert_eq!(served, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn a_lock_kept_for_a_dead_waiter_is_free_again_when_its_ticket_expires() {
        use crate::engine::scripts::{LINE_ACQUIRE_SCRIPT, LINE_RELEASE_SCRIPT};
        let (stores, redlock) = stores(3);
        let keys3: Vec<String> = ["k", "{k}:redlock-rs:line", "{k}:redlock-rs:line:exp"]
            .map(String::from)
            .to_vec();
        for s in &stores {
            hold(s, "k").await;
            // A waiter takes its ticket (150 ms) and dies; the holder's release keeps the
            // lock for it.
            let wait =
                LINE_ACQUIRE_SCRIPT.evalsha(&keys3, &["dead-value", "5000", "dead", "1", "150"]);
            assert_eq!(
                s.execute(&wait).await.unwrap(),
                redis::Value::BulkString(b"other".to_vec())
            );
            let release = LINE_RELEASE_SCRIPT.evalsha(&keys3, &["other"]);
            assert_eq!(s.execute(&release).await.unwrap(), redis::Value::Int(1));
        }
        let settings = Settings {
            retry_count: 1_000,
            retry_delay_ms: 20,
            retry_jitter_ms: 0,
            ..*redlock.settings()
        };
        let started = Instant::now();
        let (_, exec) = redlock
            .acquire(&["k".into()], 5_000, &Call::new(&settings))
            .await;
        assert!(exec.outcome.is_ok());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "kept for the ticket: {took:?}"
        );
        // The dead ticket is gone, and the winner's own left with its win.
        tokio::time::sleep(Duration::from_millis(20)).await; // the last node's answer
        for s in &stores {
            assert_eq!(s.keys(), vec!["k".to_string()]);
        }
    }

    #[tokio::test]
    async fn waiters_of_one_process_are_served_in_arrival_order() {
        let (stores, redlock) = stores(3);
        let redlock = Arc::new(redlock);
        let same = redlock.clone();
        let served = served_order(
            &stores,
            redlock,
            |_| same.clone(),
            Duration::from_millis(10),
            |_| {},
        )
        .await;
        assert_eq!(served, vec![0, 1, 2]);
        let _ = Op::Release;
    }
}
