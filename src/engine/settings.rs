//! Redlock settings, with node-redlock v5's defaults.

use std::time::Duration;

use crate::engine::args::{non_negative_ms, show};
use crate::engine::error::ArgError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub drift_factor: f64,
    /// Retries after the first attempt; `-1` retries until the operation succeeds.
    pub retry_count: i64,
    pub retry_delay_ms: u64,
    pub retry_jitter_ms: u64,
    pub automatic_extension_threshold_ms: u64,
    /// Give every acquired lock a fencing token.
    pub fencing: bool,
    /// After acquiring, `WAIT` until this many replicas of each master acknowledged the
    /// lock (0: do not wait); an acquire without a quorum of such masters fails.
    pub wait_replicas: u64,
    /// The longest duration an acquire or extend may ask for; also how long a node known
    /// to have restarted sits out of acquires (see [`crate::engine::trust`]).
    pub max_duration_ms: u64,
    /// Whether restarted nodes sit out of acquires for `max_duration_ms`.
    pub restart_quarantine: bool,
}

/// The settings keys users may pass (JavaScript names), for the "did you mean" of an
/// unknown key. `signal` is read by the JavaScript layer.
pub const KEYS: &[&str] = &[
    "driftFactor",
    "retryCount",
    "retryDelay",
    "retryJitter",
    "automaticExtensionThreshold",
    "fencing",
    "waitReplicas",
    "maxDuration",
    "restartQuarantine",
    "signal",
];

/// Refuses a settings key that is not one of [`KEYS`], naming the closest valid one.
pub fn check_key(ctx: &str, key: &str) -> Result<(), ArgError> {
    if KEYS.contains(&key) {
        return Ok(());
    }
    let lower = key.to_ascii_lowercase();
    let (distance, closest) = KEYS
        .iter()
        .map(|k| (edit_distance(&k.to_ascii_lowercase(), &lower), *k))
        .min()
        .unwrap_or((usize::MAX, "retryCount"));
    // A guess only for a slip of a few letters (`ttl` is no `signal`).
    let guess = if distance <= (key.chars().count() / 3).max(2) {
        format!(" did you mean {closest}?")
    } else {
        String::new()
    };
    Err(ArgError::type_error(format!(
        "{ctx}.{key} is not a setting:{guess} Settings are {}.",
        KEYS.join(", ")
    )))
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            drift_factor: 0.01,
            retry_count: 10,
            retry_delay_ms: 200,
            retry_jitter_ms: 100,
            automatic_extension_threshold_ms: 500,
            fencing: false,
            wait_replicas: 0,
            max_duration_ms: 300_000,
            restart_quarantine: true,
        }
    }
}

/// Values a user gave (JavaScript numbers); `None` keeps the base value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SettingsPatch {
    pub drift_factor: Option<f64>,
    pub retry_count: Option<f64>,
    pub retry_delay: Option<f64>,
    pub retry_jitter: Option<f64>,
    pub automatic_extension_threshold: Option<f64>,
    pub fencing: Option<bool>,
    pub wait_replicas: Option<f64>,
    pub max_duration: Option<f64>,
    pub restart_quarantine: Option<bool>,
}

impl Settings {
    /// These settings with `patch` applied, every given value validated. 0 is a valid value.
    pub fn apply(&self, patch: &SettingsPatch) -> Result<Settings, ArgError> {
        let mut s = *self;
        if let Some(v) = patch.drift_factor {
            if !v.is_finite() || !(0.0..1.0).contains(&v) {
                return Err(ArgError::range_error(format!(
                    "settings.driftFactor must be a number >= 0 and < 1. Got {}.",
                    show(v)
                )));
            }
            s.drift_factor = v;
        }
        if let Some(v) = patch.retry_count {
            // Infinity retries until acquired, as -1 does (node-redlock retries for ever).
            let v = if v == f64::INFINITY { -1.0 } else { v };
            if !v.is_finite() || v.fract() != 0.0 || v < -1.0 || v > i32::MAX as f64 {
                return Err(ArgError::range_error(format!(
                    "settings.retryCount must be an integer >= -1 (-1 or Infinity retries until acquired). Got {}.",
                    show(v)
                )));
            }
            s.retry_count = v as i64;
        }
        if let Some(v) = patch.retry_delay {
            s.retry_delay_ms = non_negative_ms("settings.retryDelay", v)?;
        }
        if let Some(v) = patch.retry_jitter {
            s.retry_jitter_ms = non_negative_ms("settings.retryJitter", v)?;
        }
        if let Some(v) = patch.automatic_extension_threshold {
            s.automatic_extension_threshold_ms =
                non_negative_ms("settings.automaticExtensionThreshold", v)?;
        }
        if let Some(f) = patch.fencing {
            s.fencing = f;
        }
        if let Some(v) = patch.wait_replicas {
            if !v.is_finite() || v.fract() != 0.0 || !(0.0..=1000.0).contains(&v) {
                return Err(ArgError::range_error(format!(
                    "settings.waitReplicas must be an integer from 0 to 1000. Got {}.",
                    show(v)
                )));
            }
            s.wait_replicas = v as u64;
        }
        if let Some(v) = patch.max_duration {
            s.max_duration_ms = crate::engine::args::duration_ms("settings.maxDuration", v)?;
        }
        if let Some(q) = patch.restart_quarantine {
            s.restart_quarantine = q;
        }
        Ok(s)
    }

    /// How many attempts an operation makes at most (`None`: until it succeeds).
    pub fn max_attempts(&self) -> Option<u64> {
        if self.retry_count < 0 {
            None
        } else {
            Some(self.retry_count as u64 + 1)
        }
    }

    /// How long an acquire may wait in all: every retry with its longest delay (`None`:
    /// until acquired).
    pub fn retry_window(&self) -> Option<Duration> {
        self.max_attempts().map(|_| {
            Duration::from_millis(
                (self.retry_count as u64)
                    .saturating_mul(self.retry_delay_ms + self.retry_jitter_ms),
            )
        })
    }

    /// The pause before the next attempt: `retryDelay` plus a uniform jitter in
    /// `[-retryJitter, +retryJitter]`, never below zero. `unit` is a number in `[0, 1)`.
    pub fn retry_pause(&self, unit: f64) -> Duration {
        let jitter = (unit * 2.0 - 1.0) * self.retry_jitter_ms as f64;
        let ms = (self.retry_delay_ms as f64 + jitter).floor().max(0.0);
        Duration::from_millis(ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_node_redlock() {
        let s = Settings::default();
        assert_eq!(s.drift_factor, 0.01);
        assert_eq!(s.retry_count, 10);
        assert_eq!(s.retry_delay_ms, 200);
        assert_eq!(s.retry_jitter_ms, 100);
        assert_eq!(s.automatic_extension_threshold_ms, 500);
        assert_eq!(s.max_attempts(), Some(11));
    }

    #[test]
    fn zero_is_a_valid_override() {
        let s = Settings::default()
            .apply(&SettingsPatch {
                retry_count: Some(0.0),
                retry_delay: Some(0.0),
                retry_jitter: Some(0.0),
                drift_factor: Some(0.0),
                automatic_extension_threshold: Some(0.0),
                fencing: Some(true),
                wait_replicas: Some(0.0),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s.retry_count, 0);
        let forever = Settings::default()
            .apply(&SettingsPatch {
                retry_count: Some(f64::INFINITY),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            forever.retry_count, -1,
            "Infinity retries until acquired, as -1"
        );
        assert_eq!(s.max_attempts(), Some(1));
        assert_eq!(s.retry_pause(0.9), Duration::ZERO);
        assert!(s.fencing);
    }

    #[test]
    fn infinite_retries() {
        let s = Settings::default()
            .apply(&SettingsPatch {
                retry_count: Some(-1.0),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s.max_attempts(), None);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            (
                SettingsPatch {
                    retry_count: Some(-2.0),
                    ..Default::default()
                },
                "retryCount",
            ),
            (
                SettingsPatch {
                    retry_count: Some(1.5),
                    ..Default::default()
                },
                "retryCount",
            ),
            (
                SettingsPatch {
                    drift_factor: Some(f64::NAN),
                    ..Default::default()
                },
                "driftFactor",
            ),
            (
                SettingsPatch {
                    drift_factor: Some(1.0),
                    ..Default::default()
                },
                "driftFactor",
            ),
            (
                SettingsPatch {
                    retry_delay: Some(-5.0),
                    ..Default::default()
                },
                "retryDelay",
            ),
            (
                SettingsPatch {
                    retry_jitter: Some(0.1),
                    ..Default::default()
                },
                "retryJitter",
            ),
            (
                SettingsPatch {
                    wait_replicas: Some(1.5),
                    ..Default::default()
                },
                "waitReplicas",
            ),
            (
                SettingsPatch {
                    automatic_extension_threshold: Some(f64::INFINITY),
                    ..Default::default()
                },
                "automaticExtensionThreshold",
            ),
        ];
        for (patch, name) in cases {
            let e = Settings::default().apply(&patch).unwrap_err();
            assert!(e.message.contains(name), "{} lacks {name}", e.message);
        }
    }

    #[test]
    fn unknown_keys_name_the_closest_setting() {
        let e = check_key("settings", "retryCnt").unwrap_err();
        assert!(e.message.contains("settings.retryCnt"), "{}", e.message);
        assert!(
            e.message.contains("did you mean retryCount?"),
            "{}",
            e.message
        );
        let e = check_key("settings", "driftfactor").unwrap_err();
        assert!(
            e.message.contains("did you mean driftFactor?"),
            "{}",
            e.message
        );
        let e = check_key("settings", "maxDurtion").unwrap_err();
        assert!(
            e.message.contains("did you mean maxDuration?"),
            "{}",
            e.message
        );
        for key in KEYS {
            assert!(check_key("settings", key).is_ok());
        }
        // Nothing close: no guess (an audit got "settings.ttl ...: did you mean signal?").
        let e = check_key("settings", "ttl").unwrap_err();
        assert!(!e.message.contains("did you mean"), "{}", e.message);
        assert!(
            e.message.contains("Settings are driftFactor"),
            "{}",
            e.message
        );
    }

    #[test]
    fn max_duration_defaults_to_five_minutes_and_is_validated() {
        assert_eq!(Settings::default().max_duration_ms, 300_000);
        assert!(Settings::default().restart_quarantine);
        let e = Settings::default()
            .apply(&SettingsPatch {
                max_duration: Some(0.0),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("settings.maxDuration"), "{}", e.message);
    }

    #[test]
    fn retry_pause_spans_the_jitter() {
        let s = Settings::default();
        assert_eq!(s.retry_pause(0.0), Duration::from_millis(100));
        assert_eq!(s.retry_pause(0.5), Duration::from_millis(200));
        assert!(s.retry_pause(0.999_999) <= Duration::from_millis(300));
        let s = Settings {
            retry_delay_ms: 10,
            retry_jitter_ms: 100,
            ..s
        };
        assert_eq!(s.retry_pause(0.0), Duration::ZERO);
    }
}
