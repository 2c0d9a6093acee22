//! Vote counting for one attempt over N nodes.
//!
//! A quorum is `floor(N/2) + 1`. The outcome is decided as soon as it is known: won
//! when `for >= quorum`, lost when the votes still outstanding can no longer make a
//! quorum. With an even N a 50/50 split is therefore a loss, never a wait.

use crate::engine::error::NodeError;

/// One node's answer in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    For,
    /// Another owner holds a resource (acquire), or our value is gone (extend).
    Locked,
    Failed(NodeError),
}

/// Where the complete votes of an attempt decided before every node answered go, once
/// every node answered or timed out.
pub type LateVotes = Box<dyn FnOnce(Vec<Option<Vote>>) + Send>;

/// What one attempt saw: a vote per node (`None` when the attempt was decided before
/// that node answered).
#[derive(Debug, Clone)]
pub struct AttemptStats {
    pub votes: Vec<Option<Vote>>,
    pub tally: Tally,
    /// Who holds the lock where a node voted against naming a holder (a hash of the value,
    /// see [`crate::engine::votes`]).
    pub holders: Vec<Option<u64>>,
    /// The fencing token of a won acquire with `fencing` (see [`Quorum::attempt`](crate::engine::redlock::Quorum::attempt)).
    pub fence: Option<i64>,
    /// Whether the votes still missing (`None`) come later, through [`Call::late`](crate::engine::redlock::Call::late).
    pub late: bool,
    /// The semaphore slot a won permit acquire holds.
    pub slot: Option<u32>,
    /// Whether the cleanup of this lost attempt left the lock kept for this waiter's own
    /// ticket on a node (it then retries soon).
    pub kept: bool,
    /// By node: whether its vote against was told already (events), as it came in or with
    /// its attempt's report (empty: none was).
    pub told: Vec<bool>,
}

/// The quorum size for `n` nodes.
pub fn quorum_of(n: usize) -> usize {
    n / 2 + 1
}

/// How an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Pending,
    Won,
    Lost,
}

/// A running count of votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub n: usize,
    pub quorum: usize,
    pub votes_for: usize,
    /// Votes against because another owner holds (or we no longer hold) a resource.
    pub locked: usize,
    /// Votes against because the node failed (error, time-out, unreachable).
    pub failed: usize,
}

impl Tally {
    pub fn new(n: usize) -> Self {
        Tally {
            n,
            quorum: quorum_of(n),
            votes_for: 0,
            locked: 0,
            failed: 0,
        }
    }

    pub fn against(&self) -> usize {
        self.locked + self.failed
    }

    pub fn outstanding(&self) -> usize {
        self.n - self.votes_for - self.against()
    }

    pub fn vote_for(&mut self) -> Decision {
        self.votes_for += 1;
        self.decision()
    }

    pub fn vote_locked(&mut self) -> Decision {
        self.locked += 1;
        self.decision()
    }

    pub fn vote_failed(&mut self) -> Decision {
        self.failed += 1;
        self.decision()
    }

    /// The decision given the votes so far.
    pub fn decision(&self) -> Decision {
        if self.votes_for >= self.quorum {
            Decision::Won
        } else if self.votes_for + self.outstanding() < self.quorum {
            Decision::Lost
        } else {
            Decision::Pending
        }
    }

    /// Why a lost attempt was lost. `Locked` when the other owner's votes alone rule a
    /// quorum out (had every failed node voted for us we still could not have won);
    /// `Undecided` when failures (errors, time-outs, outstanding votes) stand between
    /// us and a decision.
    ///
    /// Decided early, a loss can leave this open: the votes still out may be the other
    /// owner's (`Locked`) or ours (`Undecided`). [`Tally::failure_known`] says when not.
    pub fn failure_kind(&self) -> FailureKind {
        if self.votes_for + self.failed + self.outstanding() >= self.quorum {
            FailureKind::Undecided
        } else {
            FailureKind::Locked
        }
    }

    /// Whether [`Tally::failure_kind`] no longer depends on the votes still out: they are
    /// all in, or the failures alone already stand between us and a quorum, or even as
    /// votes for us they could not make the loss undecided.
    pub fn failure_known(&self) -> bool {
        self.outstanding() == 0
            || self.votes_for + self.failed >= self.quorum
            || self.votes_for + self.failed + self.outstanding() < self.quorum
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Another owner holds the resource on enough nodes.
    Locked,
    /// Too many nodes failed (or time ran out) to decide either way.
    Undecided,
    /// The lock had expired (an extend of an expired lock).
    Expired,
    /// The call was aborted (`settings.signal`).
    Aborted,
}

impl FailureKind {
    /// The `reason` users see on errors.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::Locked => "locked",
            FailureKind::Undecided => "quorum-unavailable",
            FailureKind::Expired => "expired",
            FailureKind::Aborted => "aborted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_sizes() {
        let q: Vec<usize> = (1..=7).map(quorum_of).collect();
        assert_eq!(q, vec![1, 2, 2, 3, 3, 4, 4]);
    }

    /// Every ordering-independent combination of (for, locked, failed) for N = 1..7:
    /// the decision matches the definition and is reached exactly when it is known.
    #[test]
    fn every_vote_combination_for_n_1_to_7() {
        for n in 1..=7usize {
            let q = quorum_of(n);
            for f in 0..=n {
                for l in 0..=(n - f) {
                    for e in 0..=(n - f - l) {
                        let t = Tally {
                            n,
                            quorum: q,
                            votes_for: f,
                            locked: l,
                            failed: e,
                        };
                        let outstanding = n - f - l - e;
                        let expected = if f >= q {
                            Decision::Won
                        } else if f + outstanding < q {
                            Decision::Lost
                        } else {
                            Decision::Pending
                        };
                        assert_eq!(t.decision(), expected, "n={n} f={f} l={l} e={e}");
                        // Won and Lost exclude each other and a full count is never pending.
                        if outstanding == 0 {
                            assert_ne!(t.decision(), Decision::Pending, "n={n} f={f} l={l} e={e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn even_n_ties_are_losses_never_pending() {
        for n in [2usize, 4, 6] {
            let mut t = Tally::new(n);
            for _ in 0..n / 2 {
                t.vote_for();
            }
            for _ in 0..n / 2 - 1 {
                assert_eq!(t.vote_locked(), Decision::Pending);
            }
            assert_eq!(t.vote_locked(), Decision::Lost, "n={n}");
            assert_eq!(t.failure_kind(), FailureKind::Locked);
        }
    }

    #[test]
    fn decides_early_on_win() {
        let mut t = Tally::new(5);
        assert_eq!(t.vote_for(), Decision::Pending);
        assert_eq!(t.vote_for(), Decision::Pending);
        assert_eq!(t.vote_for(), Decision::Won);
        assert_eq!(t.outstanding(), 2);
    }

    #[test]
    fn decides_early_on_loss() {
        let mut t = Tally::new(5);
        assert_eq!(t.vote_locked(), Decision::Pending);
        assert_eq!(t.vote_failed(), Decision::Pending);
        assert_eq!(t.vote_locked(), Decision::Lost);
        assert_eq!(t.outstanding(), 2);
    }

    /// `failure_known` holds exactly when every way the outstanding votes could still
    /// come in (for us, for another owner, or failing) leaves the same failure kind.
    #[test]
    fn failure_known_iff_the_outstanding_votes_cannot_change_the_reason() {
        for n in 1..=7usize {
            for f in 0..=n {
                for l in 0..=(n - f) {
                    for e in 0..=(n - f - l) {
                        let mut t = Tally::new(n);
                        (t.votes_for, t.locked, t.failed) = (f, l, e);
                        let out = t.outstanding();
                        let mut kinds = Vec::new();
                        for more_for in 0..=out {
                            for more_locked in 0..=(out - more_for) {
                                let mut all_in = t;
                                all_in.votes_for += more_for;
                                all_in.locked += more_locked;
                                all_in.failed += out - more_for - more_locked;
                                kinds.push(all_in.failure_kind());
                            }
                        }
                        let same = kinds.iter().all(|k| *k == kinds[0]);
                        assert_eq!(t.failure_known(), same, "n={n} f={f} l={l} e={e}");
                        if same {
                            assert_eq!(t.failure_kind(), kinds[0], "n={n} f={f} l={l} e={e}");
                        }
                    }
                }
            }
        }
        // The case CI met: 3 nodes, one refused, one held by another owner, one still out.
        let mut t = Tally::new(3);
        t.vote_failed();
        assert_eq!(t.vote_locked(), Decision::Lost);
        assert!(!t.failure_known());
        t.vote_locked();
        assert!(t.failure_known());
        assert_eq!(t.failure_kind(), FailureKind::Locked);
    }

    #[test]
    fn single_node() {
        let mut t = Tally::new(1);
        assert_eq!(t.vote_for(), Decision::Won);
        let mut t = Tally::new(1);
        assert_eq!(t.vote_failed(), Decision::Lost);
        assert_eq!(t.failure_kind(), FailureKind::Undecided);
        let mut t = Tally::new(1);
        assert_eq!(t.vote_locked(), Decision::Lost);
        assert_eq!(t.failure_kind(), FailureKind::Locked);
    }

    #[test]
    fn failure_kinds() {
        // 3 of 5 down: undecided.
        let t = Tally {
            n: 5,
            quorum: 3,
            votes_for: 2,
            locked: 0,
            failed: 3,
        };
        assert_eq!(t.failure_kind(), FailureKind::Undecided);
        // Held elsewhere on a majority: locked, even with some failures.
        let t = Tally {
            n: 5,
            quorum: 3,
            votes_for: 0,
            locked: 3,
            failed: 2,
        };
        assert_eq!(t.failure_kind(), FailureKind::Locked);
        // Failures could have tipped it: undecided.
        let t = Tally {
            n: 5,
            quorum: 3,
            votes_for: 1,
            locked: 2,
            failed: 2,
        };
        assert_eq!(t.failure_kind(), FailureKind::Undecided);
        // Early loss with votes outstanding that could not matter: locked.
        let t = Tally {
            n: 5,
            quorum: 3,
            votes_for: 0,
            locked: 3,
            failed: 0,
        };
        assert_eq!(t.failure_kind(), FailureKind::Locked);
    }
}
