//! The host → guest line protocol: bytes a (possibly hostile) host writes to the vsock listener.
//!
//! Input layout: `[k] [k+1 chunk-size bytes] [payload...]` where `k = input[0] % 8`. The payload
//! is fed to one `LineDecoder` in chunks whose sizes cycle through the chunk-size bytes
//! (`b + 1` bytes each; `0xff` means "8 KiB", enough to cross `MAX_LINE` in one push).
//!
//! Invariants checked beyond "no panic":
//! - `pending()` never exceeds `MAX_LINE + 1` (the documented cap: one byte of slack for a `\r`
//!   before the `\n`), and is 0 once closed;
//! - after `Dropped::Overlong` the decoder is closed, it is the last item of its push and later
//!   pushes return nothing;
//! - the chunked output equals a one-shot reference model built from `parse_line` on the
//!   payload split at `\n` (so chunking never changes what is decoded), and the final
//!   `pending()` equals the reference's unterminated tail;
//! - every accepted channel passes `validate_channel`; every accepted relpath has no `..`,
//!   `.` or empty component, no leading `/`, no NUL, and re-validates to itself;
//! - `validate_relpath` and `validate_channel` on the raw payload obey the same rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfnotify::protocol::{
    Dropped, LineDecoder, LineError, MAX_CHANNEL, MAX_LINE, MAX_RELPATH, Notification, parse_line,
    validate_channel, validate_relpath,
};

fn check_relpath(p: &str) {
    assert!(!p.is_empty(), "accepted relpath is empty");
    assert!(p.len() <= MAX_RELPATH, "accepted relpath too long");
    assert!(!p.starts_with('/'), "accepted relpath is absolute: {p:?}");
    assert!(!p.contains('\0'), "accepted relpath has a NUL: {p:?}");
    for c in p.split('/') {
        assert!(c != "..", "accepted relpath has a '..' component: {p:?}");
        assert!(c != "." && !c.is_empty(), "relpath not normalised: {p:?}");
    }
    assert_eq!(
        validate_relpath(p).as_deref(),
        Ok(p),
        "normalised relpath does not re-validate to itself"
    );
}

fn check_notification(n: &Notification) {
    assert_eq!(validate_channel(&n.channel), Ok(()), "{:?}", n.channel);
    assert!(!n.channel.is_empty() && n.channel.len() <= MAX_CHANNEL);
    assert!(!n.channel.contains('\t') && !n.channel.contains('\n'));
    if let Some(p) = &n.path {
        check_relpath(p);
    }
}

/// The one-shot model: split at `\n`, parse each complete line.
fn reference(payload: &[u8]) -> (Vec<Result<Notification, Dropped>>, bool, usize) {
    let mut out = Vec::new();
    let mut rest = payload;
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                if line.len() > MAX_LINE + 1 {
                    out.push(Err(Dropped::Overlong));
                    return (out, true, 0);
                }
                match parse_line(line) {
                    Ok(Some(n)) => out.push(Ok(n)),
                    Ok(None) => {}
                    Err(LineError::Overlong) => {
                        out.push(Err(Dropped::Overlong));
                        return (out, true, 0);
                    }
                    Err(e) => out.push(Err(Dropped::Line(e))),
                }
            }
            None => {
                if rest.len() > MAX_LINE + 1 {
                    out.push(Err(Dropped::Overlong));
                    return (out, true, 0);
                }
                return (out, false, rest.len());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(k % 8) + 1;
    if rest.len() < k {
        return;
    }
    let (sizes, payload) = rest.split_at(k);

    // Chunked decoding.
    let mut d = LineDecoder::new();
    let mut got = Vec::new();
    let mut off = 0;
    let mut i = 0;
    while off < payload.len() {
        let s = match sizes[i % sizes.len()] {
            0xff => 8192,
            b => usize::from(b) + 1,
        };
        i += 1;
        let end = payload.len().min(off + s);
        let was_closed = d.is_closed();
        let out = d.push(&payload[off..end]);
        off = end;
        if was_closed {
            assert!(out.is_empty(), "a closed decoder yielded {out:?}");
        }
        if let Some(pos) = out.iter().position(|r| *r == Err(Dropped::Overlong)) {
            assert_eq!(pos, out.len() - 1, "items after Overlong");
            assert!(d.is_closed());
        }
        assert!(
            d.pending() <= MAX_LINE + 1,
            "decoder buffers {} bytes (cap {})",
            d.pending(),
            MAX_LINE + 1
        );
        if d.is_closed() {
            assert_eq!(d.pending(), 0);
        }
        for r in &out {
            if let Ok(n) = r {
                check_notification(n);
            }
        }
        got.extend(out);
    }

    // Chunking never changes the result.
    let (want, closed, pending) = reference(payload);
    assert_eq!(
        got, want,
        "chunked decoding differs from the one-shot model"
    );
    assert_eq!(d.is_closed(), closed);
    if !closed {
        assert_eq!(d.pending(), pending);
    }

    // The pure functions on the raw payload.
    if let Ok(Some(n)) = parse_line(payload) {
        check_notification(&n);
    }
    let text = String::from_utf8_lossy(payload);
    if let Ok(p) = validate_relpath(&text) {
        check_relpath(&p);
        assert!(!text.starts_with('/'));
        assert!(!text.split('/').any(|c| c == ".."));
    }
    if validate_channel(&text).is_ok() {
        assert!(!text.is_empty() && text.len() <= MAX_CHANNEL);
        assert!(!text.chars().any(char::is_control));
    }
});
