//! How long a blocking command a user sends (`call()`) asks the server to block: its
//! reply may come that much later than any other command's.

use std::time::Duration;

/// The block time of the command `args` (its name first): `None` for a command that does
/// not block; `Some(None)` for one that blocks without end (a time-out of 0);
/// `Some(Some(t))` for one that blocks up to `t`. A time-out that does not read as a
/// number is the server's to refuse: no block.
pub fn block_time(args: &[&[u8]]) -> Option<Option<Duration>> {
    let name = String::from_utf8_lossy(args.first()?).to_ascii_uppercase();
    let rest = &args[1..];
    let (timeout, unit_ms) = match name.as_str() {
        // The time-out (seconds, fractions allowed) last.
        "BLPOP" | "BRPOP" | "BZPOPMIN" | "BZPOPMAX" | "BRPOPLPUSH" | "BLMOVE" => {
            (rest.last()?, false)
        }
        // The time-out (seconds) first.
        "BLMPOP" | "BZMPOP" => (rest.first()?, false),
        // `BLOCK ms` among the options.
        "XREAD" | "XREADGROUP" => {
            let at = rest.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
            (rest.get(at + 1)?, true)
        }
        // The time-out (ms) last.
        "WAIT" | "WAITAOF" => (rest.last()?, true),
        _ => return None,
    };
    let value: f64 = std::str::from_utf8(timeout).ok()?.trim().parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    if value == 0.0 {
        return Some(None);
    }
    let ms = if unit_ms { value } else { value * 1000.0 };
    Some(Some(Duration::from_micros((ms * 1000.0) as u64)))
}

/// [`block_time`] of `cmd`, looked into only for the names of blocking commands (every
/// lock command, on the connection's hot path, is spared the work).
pub fn of_cmd(cmd: &redis::Cmd) -> Option<Option<Duration>> {
    let redis::Arg::Simple(first) = cmd.args_iter().next()? else {
        return None;
    };
    if !matches!(first.first()?.to_ascii_uppercase(), b'B' | b'X' | b'W') {
        return None;
    }
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => b,
            _ => &b""[..],
        })
        .collect();
    block_time(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(cmd: &str) -> Option<Option<Duration>> {
        let args: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
        block_time(&args)
    }

    #[test]
    fn blocking_commands_and_their_block_times() {
        let ms = |n| Some(Some(Duration::from_millis(n)));
        assert_eq!(of("BLPOP a b 7"), ms(7_000));
        assert_eq!(of("brpop a 0.5"), ms(500));
        assert_eq!(of("BLMOVE a b LEFT RIGHT 2"), ms(2_000));
        assert_eq!(of("BZPOPMIN z 1.25"), ms(1_250));
        assert_eq!(of("BLMPOP 3 2 a b LEFT"), ms(3_000));
        assert_eq!(of("XREAD COUNT 1 BLOCK 500 STREAMS s $"), ms(500));
        assert_eq!(of("XREADGROUP GROUP g c block 250 STREAMS s >"), ms(250));
        assert_eq!(of("WAIT 1 100"), ms(100));
        assert_eq!(of("WAITAOF 1 0 300"), ms(300));
    }

    #[test]
    fn block_without_end_and_commands_that_do_not_block() {
        assert_eq!(of("BLPOP q 0"), Some(None));
        assert_eq!(of("XREAD BLOCK 0 STREAMS s $"), Some(None));
        assert_eq!(of("WAIT 1 0"), Some(None));
        assert_eq!(of("XREAD STREAMS s 0"), None, "no BLOCK option");
        assert_eq!(of("GET k"), None);
        assert_eq!(of("BLPOP q soon"), None, "the server refuses it");
        assert_eq!(of("BLPOP q -1"), None);
        assert_eq!(of("BLPOP"), None);
        assert_eq!(block_time(&[]), None);
    }
}
