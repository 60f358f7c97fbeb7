//! Login throttling that slows password guessing without handing anyone a way to lock an
//! account's owner out.
//!
//! A plain per-account limit on attempts does both: whoever sends enough wrong passwords
//! for an address makes its owner's right password a 429. So only *failures* count, and
//! they are kept per (client IP, account) and per account:
//!
//! - **Per IP, every attempt** (the governor bucket `login_ips` in the parent module,
//!   `login_per_minute`): one client cannot spray many accounts, and pays before any
//!   password is hashed.
//! - **Per (IP, account), failures**: `login_per_minute` of them per [`PAIR_WINDOW`] (one
//!   forgiven every `PAIR_WINDOW / login_per_minute`). Past that, that IP gets 429 for that
//!   account, even with the right password: it is the guesser's IP. Another IP is not
//!   affected, and a right password from this IP clears its record.
//! - **Per account, failures from all IPs**: `login_per_minute` a minute. While that budget
//!   is spent the account is under attack, and an IP may try it only if it has not failed
//!   on it within [`PAIR_WINDOW`]. The owner, arriving from an IP that has not been
//!   guessing, still gets in with the right password; a distributed guesser gets the
//!   account's budget plus one guess per IP per window, each IP also bounded by its own
//!   budget across all accounts.
//!
//! An attempt is charged as a failure when it starts and refunded when the password turns
//! out right, so a burst of concurrent guesses cannot all pass the check before the first
//! failure is recorded. The ledgers are in memory, per process, like the other buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a failure from one IP on one account is remembered.
pub const PAIR_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Most (IP, account) pairs and accounts with recent failures kept. Past that, expired
/// records are dropped (at most once per [`PRUNE_SPACING`]: a full ledger must not make
/// every attempt sweep it under the lock); if the ledger is still full, a new pair is let
/// in untracked while its account is not under attack (its owner, most likely; each IP
/// still pays its own budget), and refused while it is (an untracked IP would then be
/// unlimited against that account). So filling the ledger locks no ordinary user out.
const MAX_RECORDS: usize = 100_000;

/// The least time between two sweeps of a full ledger.
const PRUNE_SPACING: Duration = Duration::from_secs(1);

/// A leaky budget of failures (GCRA): `burst` fit at once, one is forgiven every
/// `interval`. `empty_at` is when every failure charged so far is forgiven.
#[derive(Debug, Clone, Copy)]
struct Budget {
    empty_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    burst: u32,
    interval: Duration,
}

impl Rule {
    fn per(burst: u32, window: Duration) -> Rule {
        let burst = burst.max(1);
        Rule {
            burst,
            interval: window / burst,
        }
    }

    fn capacity(self) -> Duration {
        self.interval * self.burst
    }
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget { empty_at: now }
    }

    /// How long until one more failure fits (zero: it fits now).
    fn wait(self, now: Instant, rule: Rule) -> Duration {
        let owed = self.empty_at.saturating_duration_since(now);
        (owed + rule.interval).saturating_sub(rule.capacity())
    }

    /// Charges one failure; a budget already spent stays full rather than growing without
    /// bound (it is forgiven at the same pace once the failures stop).
    fn charge(&mut self, now: Instant, rule: Rule) {
        let from = self.empty_at.max(now);
        self.empty_at = (from + rule.interval).min(now + rule.capacity());
    }

    fn refund(&mut self, now: Instant, rule: Rule) {
        self.empty_at = self
            .empty_at
            .checked_sub(rule.interval)
            .map_or(now, |at| at.max(now));
    }
}

#[derive(Debug, Clone, Copy)]
struct PairRecord {
    failures: Budget,
    last_failure: Instant,
}

type Pair = (IpAddr, String);

#[derive(Debug, Default)]
struct Ledgers {
    pairs: HashMap<Pair, PairRecord>,
    accounts: HashMap<String, Budget>,
    /// When a full ledger was last swept.
    swept_at: Option<Instant>,
}

/// Why an attempt was refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

/// The failure ledgers of this process.
#[derive(Debug)]
pub struct LoginThrottle {
    pair: Rule,
    account: Rule,
    ledgers: Mutex<Ledgers>,
}

impl LoginThrottle {
    /// `per_minute` failures a minute per account, the same number per [`PAIR_WINDOW`] per
    /// (IP, account).
    pub fn new(per_minute: u32) -> LoginThrottle {
        LoginThrottle {
            pair: Rule::per(per_minute, PAIR_WINDOW),
            account: Rule::per(per_minute, Duration::from_secs(60)),
            ledgers: Mutex::default(),
        }
    }

    /// Failures an account takes in a minute (and an IP on one account per window).
    pub fn burst(&self) -> u32 {
        self.account.burst
    }

    fn ledgers(&self) -> MutexGuard<'_, Ledgers> {
        // The maps stay consistent between statements; a panic elsewhere cannot break them.
        self.ledgers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts an attempt on `account` (normalised) from `ip` (its bucket address) at `now`,
    /// charging it as a failure until [`LoginAttempt::password_accepted`] says otherwise.
    pub fn begin(
        &self,
        ip: IpAddr,
        account: &str,
        now: Instant,
    ) -> Result<LoginAttempt<'_>, Throttled> {
        let key = (ip, account.to_owned());
        let mut ledgers = self.ledgers();
        let pair = ledgers.pairs.get(&key).copied();
        if let Some(pair) = pair {
            let wait = pair.failures.wait(now, self.pair);
            if !wait.is_zero() {
                return Err(Throttled { retry_after: wait });
            }
        }
        let account_wait = ledgers
            .accounts
            .get(account)
            .map_or(Duration::ZERO, |budget| budget.wait(now, self.account));
        if !account_wait.is_zero() {
            // Under attack: only an IP with no recent failure on this account may try.
            let clean_in = pair.map_or(Duration::ZERO, |pair| {
                (pair.last_failure + PAIR_WINDOW).saturating_duration_since(now)
            });
            if !clean_in.is_zero() {
                return Err(Throttled {
                    retry_after: account_wait.min(clean_in),
                });
            }
        }
        if pair.is_none() && !ledgers.has_room(now) {
            if account_wait.is_zero() {
                return Ok(LoginAttempt {
                    throttle: self,
                    key,
                    tracked: false,
                });
            }
            return Err(Throttled {
                retry_after: self.account.interval,
            });
        }
        let record = ledgers.pairs.entry(key.clone()).or_insert(PairRecord {
            failures: Budget::new(now),
            last_failure: now,
        });
        record.failures.charge(now, self.pair);
        record.last_failure = now;
        ledgers
            .accounts
            .entry(key.1.clone())
            .or_insert_with(|| Budget::new(now))
            .charge(now, self.account);
        Ok(LoginAttempt {
            throttle: self,
            key,
            tracked: true,
        })
    }

    /// Forgets records with nothing left to forgive; call it periodically.
    pub fn retain_recent(&self) {
        self.ledgers().prune(Instant::now());
    }

    #[cfg(test)]
    fn records(&self) -> (usize, usize) {
        let ledgers = self.ledgers();
        (ledgers.pairs.len(), ledgers.accounts.len())
    }
}

impl Ledgers {
    fn prune(&mut self, now: Instant) {
        self.pairs.retain(|_, pair| {
            pair.failures.empty_at > now || pair.last_failure + PAIR_WINDOW > now
        });
        self.accounts.retain(|_, budget| budget.empty_at > now);
        self.pairs.shrink_to_fit();
        self.accounts.shrink_to_fit();
    }

    /// Whether a new pair (and perhaps a new account) can be recorded.
    fn has_room(&mut self, now: Instant) -> bool {
        if self.pairs.len() < MAX_RECORDS && self.accounts.len() < MAX_RECORDS {
            return true;
        }
        if self
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < PRUNE_SPACING)
        {
            return false;
        }
        self.swept_at = Some(now);
        self.prune(now);
        self.pairs.len() < MAX_RECORDS && self.accounts.len() < MAX_RECORDS
    }
}

/// A login attempt under way, charged as a failure. Dropping it without
/// [`LoginAttempt::password_accepted`] leaves it a failure: a wrong password, an unknown
/// account, or an attempt that could not be judged.
#[derive(Debug)]
#[must_use = "an attempt is a failure unless its password is accepted"]
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    key: Pair,
    /// False when a full ledger let it in without recording it: nothing to refund.
    tracked: bool,
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt is not a failure, and the IP's record on this
    /// account is cleared (it knows the password; whatever it got wrong before was typing).
    pub fn password_accepted(self) {
        self.accepted_at(Instant::now());
    }

    fn accepted_at(self, now: Instant) {
        if !self.tracked {
            return;
        }
        let throttle = self.throttle;
        let mut ledgers = throttle.ledgers();
        ledgers.pairs.remove(&self.key);
        if let Some(budget) = ledgers.accounts.get_mut(&self.key.1) {
            budget.refund(now, throttle.account);
        }
    }
}

#[cfg(test)]
mod tests;
