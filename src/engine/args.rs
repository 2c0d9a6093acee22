//! Validation of the values users pass. Every error names the argument.

use crate::engine::config::TlsConfig;
use crate::engine::error::ArgError;

/// The largest duration accepted: JavaScript's `Number.MAX_SAFE_INTEGER` ms, which also
/// fits the `i64` Redis uses for `PX`.
pub const MAX_DURATION_MS: f64 = 9_007_199_254_740_991.0;

/// A lock duration in ms: a finite integer in `1..=MAX_DURATION_MS`.
///
/// The message starts with node-redlock's `"Duration must be an integer value in
/// milliseconds."` (with `name` in place of `Duration`).
pub fn duration_ms(name: &str, value: f64) -> Result<u64, ArgError> {
    // Formatted only for an error (this runs on every acquire and extend).
    let base = || format!("{name} must be an integer value in milliseconds.");
    if !value.is_finite() || value.fract() != 0.0 {
        return Err(ArgError::range_error(format!(
            "{} Got {}.",
            base(),
            show(value)
        )));
    }
    // (Only the bound that was crossed is said: the one that counts above is
    // settings.maxDuration, checked with the settings; found by an audit.)
    if value <= 0.0 {
        return Err(ArgError::range_error(format!(
            "{} Got {}: it must be greater than 0.",
            base(),
            show(value)
        )));
    }
    if value > MAX_DURATION_MS {
        return Err(ArgError::range_error(format!(
            "{} Got {}: it must be at most {MAX_DURATION_MS}.",
            base(),
            show(value)
        )));
    }
    Ok(value as u64)
}

/// node-redlock's duration check: any bad duration gets exactly node-redlock's message,
/// `"Duration must be an integer value in milliseconds."`, with nothing appended (code
/// written for node-redlock compares it).
pub fn v5_duration_ms(value: f64) -> Result<u64, ArgError> {
    duration_ms("Duration", value).map_err(|e| ArgError {
        message: "Duration must be an integer value in milliseconds.".into(),
        ..e
    })
}

/// A duration within `settings.maxDuration` (which bounds how long a restarted node must
/// sit out: see [`crate::engine::trust`]).
pub fn within_max_duration(name: &str, ttl_ms: u64, max_ms: u64) -> Result<u64, ArgError> {
    if ttl_ms > max_ms {
        return Err(ArgError::range_error(format!(
            "{name} of {ttl_ms} ms is above settings.maxDuration ({max_ms} ms). For long jobs use \
             using(), which extends the lock automatically, so the duration can stay short; or \
             raise maxDuration (restarted nodes then sit out that long)."
        )));
    }
    Ok(ttl_ms)
}

/// A whole number of ms that may be 0 (delays, thresholds, time-outs).
pub fn non_negative_ms(name: &str, value: f64) -> Result<u64, ArgError> {
    if !value.is_finite() || value.fract() != 0.0 || !(0.0..=MAX_DURATION_MS).contains(&value) {
        return Err(ArgError::range_error(format!(
            "{name} must be an integer number of milliseconds >= 0. Got {}.",
            show(value)
        )));
    }
    Ok(value as u64)
}

/// The PEM texts of TLS settings named `ctx` (`options.tls`): `ca` and `cert` hold
/// certificates, `key` a private key, and `cert` and `key` come together. Checked when a
/// client is made, so that a wrong file is a `TypeError` naming the field, not a failed
/// connect.
pub fn tls_pem(ctx: &str, tls: &TlsConfig) -> Result<(), ArgError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // The CA's certificates are read as trust anchors too, as a connect does (found by an
    // audit: PEM armour around something else passed, and failed every connect instead).
    let certs = |field: &str, pem: &str| match CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(list) if field != "ca" && !list.is_empty() => Ok(()),
        Ok(list) if !list.is_empty() => {
            let mut roots = rustls::RootCertStore::empty();
            match list.into_iter().try_for_each(|c| roots.add(c)) {
                Ok(()) => Ok(()),
                Err(_) => Err(ArgError::type_error(format!(
                    "{ctx}.{field} must be PEM text of certificates (-----BEGIN CERTIFICATE-----); \
                     one of them is not an X.509 certificate."
                ))),
            }
        }
        _ => Err(ArgError::type_error(format!(
            "{ctx}.{field} must be PEM text of certificates (-----BEGIN CERTIFICATE-----); \
             none could be read from it."
        ))),
    };
    if let Some(ca) = &tls.ca {
        certs("ca", ca)?;
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            certs("cert", cert)?;
            let no_key = || {
                ArgError::type_error(format!(
                    "{ctx}.key must be PEM text of a private key (-----BEGIN PRIVATE KEY-----); \
                     none could be read from it."
                ))
            };
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| no_key())?;
            // The key itself is read too (RSA, ECDSA or Ed25519), as a connect would.
            let provider = rustls::crypto::ring::default_provider();
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|_| no_key())?;
            Ok(())
        }
        (None, None) => Ok(()),
        (Some(_), None) | (None, Some(_)) => Err(ArgError::type_error(format!(
            "{ctx}.cert and {ctx}.key go together (a client certificate and its key): give both or neither."
        ))),
    }
}

/// A resource name: a non-empty string.
pub fn resource(name: impl std::fmt::Display, value: &str) -> Result<(), ArgError> {
    if value.is_empty() {
        return Err(ArgError::type_error(format!(
            "{name} must be a non-empty string."
        )));
    }
    Ok(())
}

/// A TCP port: an integer in 1..=65535.
pub fn port(name: &str, value: f64) -> Result<u16, ArgError> {
    if value.fract() != 0.0 || !(1.0..=65535.0).contains(&value) {
        return Err(ArgError::range_error(format!(
            "{name} must be an integer from 1 to 65535. Got {}.",
            show(value)
        )));
    }
    Ok(value as u16)
}

/// A database index: an integer in 0..=i32::MAX.
pub fn db(name: &str, value: f64) -> Result<i64, ArgError> {
    if value.fract() != 0.0 || !(0.0..=i32::MAX as f64).contains(&value) {
        return Err(ArgError::range_error(format!(
            "{name} must be a non-negative integer. Got {}.",
            show(value)
        )));
    }
    Ok(value as i64)
}

/// Formats a number the way JavaScript prints it, for messages.
pub fn show(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e21 {
        format!("{}", value as i128)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::ArgErrorKind;

    const NOT_A_CERT: &str =
        "-----BEGIN CERTIFICATE-----\nQUFBQUFBQUFBQUFB\n-----END CERTIFICATE-----\n";
    const NOT_A_KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nQUFBQUFBQUFBQUFB\n-----END PRIVATE KEY-----\n";

    #[test]
    fn tls_pem_names_the_field_that_holds_no_pem() {
        let tls = |ca: Option<&str>, cert: Option<&str>, key: Option<&str>| TlsConfig {
            ca: ca.map(str::to_owned),
            cert: cert.map(str::to_owned),
            key: key.map(str::to_owned),
            ..TlsConfig::default()
        };
        assert_eq!(tls_pem("o.tls", &tls(None, None, None)), Ok(()));
        for (bad, field) in [
            (tls(Some("garbage"), None, None), "o.tls.ca must be PEM"),
            (tls(Some(""), None, None), "o.tls.ca must be PEM"),
            (tls(None, Some("x"), Some("y")), "o.tls.cert must be PEM"),
            // PEM armour around something else (found by an audit: it failed every
            // connect instead).
            (tls(Some(NOT_A_CERT), None, None), "o.tls.ca must be PEM"),
            (
                tls(None, Some(NOT_A_CERT), Some(NOT_A_KEY)),
                "o.tls.key must be PEM",
            ),
            (
                tls(None, Some("x"), None),
                "o.tls.cert and o.tls.key go together",
            ),
            (
                tls(None, None, Some("y")),
                "o.tls.cert and o.tls.key go together",
            ),
        ] {
            let e = tls_pem("o.tls", &bad).unwrap_err();
            assert_eq!(e.kind, ArgErrorKind::Type);
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("ttl", 1.0), Ok(1));
        assert_eq!(duration_ms("ttl", 10_000.0), Ok(10_000));
        assert_eq!(
            duration_ms("ttl", MAX_DURATION_MS),
            Ok(9_007_199_254_740_991)
        );
        for bad in [
            0.0,
            -1.0,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -0.0,
        ] {
            let e = duration_ms("Duration", bad).unwrap_err();
            assert_eq!(e.kind, ArgErrorKind::Range, "{bad}");
            assert!(
                e.message
                    .starts_with("Duration must be an integer value in milliseconds."),
                "{}",
                e.message
            );
        }
        for bad in [1.5, -1.0, 0.0, f64::NAN] {
            assert_eq!(
                v5_duration_ms(bad).unwrap_err().message,
                "Duration must be an integer value in milliseconds."
            );
        }
        assert_eq!(
            within_max_duration("Duration", 300_000, 300_000),
            Ok(300_000)
        );
        let e = within_max_duration("Duration", 300_001, 300_000).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::Range);
        assert!(e.message.contains("settings.maxDuration"), "{}", e.message);
        assert!(e.message.contains("using()"), "{}", e.message);
        assert!(duration_ms("ttl", 1.5)
            .unwrap_err()
            .message
            .contains("Got 1.5"));
        assert!(duration_ms("ttl", f64::NAN)
            .unwrap_err()
            .message
            .contains("Got NaN"));
    }

    #[test]
    fn non_negative() {
        assert_eq!(non_negative_ms("retryDelay", 0.0), Ok(0));
        assert!(non_negative_ms("retryDelay", -1.0)
            .unwrap_err()
            .message
            .contains("retryDelay"));
        assert!(non_negative_ms("retryDelay", 0.5).is_err());
        assert!(non_negative_ms("retryDelay", f64::NAN).is_err());
    }

    #[test]
    fn resources_ports_dbs() {
        assert!(resource("resource", "a").is_ok());
        let e = resource("resource", "").unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::Type);
        assert!(e.message.contains("resource"));
        assert_eq!(port("port", 6379.0), Ok(6379));
        for bad in [0.0, 65536.0, -1.0, 1.5, f64::NAN] {
            assert!(port("port", bad).is_err(), "{bad}");
        }
        assert_eq!(db("db", 0.0), Ok(0));
        assert!(db("db", -1.0).is_err());
        assert!(db("db", 0.5).is_err());
    }

    #[test]
    fn shows_numbers_like_js() {
        assert_eq!(show(1.0), "1");
        assert_eq!(show(-0.0), "0");
        assert_eq!(show(1.5), "1.5");
        assert_eq!(show(f64::NEG_INFINITY), "-Infinity");
    }
}
