//! Regression tests for what the fuzz targets under `fuzz/` found (see SECURITY.md, "Fuzzing").
//!
//! Each test calls the same public function as its fuzz target with the offending input. Tests
//! for bugs not fixed yet are `#[ignore]`d with the reason; remove the attribute with the fix.

use vfnotify::overlay::options::parse;
use vfnotify::protocol::{Dropped, LineDecoder, MAX_LINE, parse_line, validate_relpath};
use vfnotify::trigger::validate_trigger_name;

/// fuzz/mount_options (with `--features strict`): the overlay accepted `trigger_name=..` and
/// names with `/`, which the daemon's `--trigger-name` refuses. In `events=toggle|both` the
/// overlay builds `MOUNTPOINT/DIR/<trigger_name>` and `mknod`s then removes it, so such a name
/// creates and deletes files outside the changed folder (even outside the mount).
///
/// Crashing input found by `cargo fuzz run --features strict mount_options` from an empty
/// corpus (minimised with `cargo fuzz tmin`), hex: 747269676765725f6e616d653d2f3d0d
/// (`trigger_name=/=\r`); hand-made: 747269676765725f6e616d653d2e2e (`trigger_name=..`).
#[test]
fn overlay_trigger_name_is_a_single_file_name() {
    // The fuzz target's exact input: split at NUL into `-o` arguments.
    let fuzzed: &[u8] = b"trigger_name=/=\r";
    let text = String::from_utf8_lossy(fuzzed);
    let args: Vec<&str> = text.split('\0').collect();
    assert!(parse(&args).is_err(), "overlay accepted {text:?}");
    for bad in [
        "..",
        ".",
        "a/b",
        "../../../etc/vfnotify-escape",
        "/etc/x",
        "a\0b",
    ] {
        assert!(validate_trigger_name(bad).is_err(), "{bad:?}");
        let opt = format!("trigger_name={bad}");
        assert!(
            parse(&[opt.as_str()]).is_err(),
            "overlay accepted {opt:?}, which the daemon refuses"
        );
    }
    assert!(parse(&["trigger_name=.virtiofs-refresh"]).is_ok());
}

/// fuzz/line_protocol invariant, pinned at the boundary: a line of exactly MAX_LINE + 1 bytes
/// (the cap's one byte of slack is for the `\r`) decodes the same whatever the chunking, and
/// one more byte closes the connection.
#[test]
fn decoder_boundary_is_chunking_independent() {
    let mut ok = b"c\t".to_vec();
    ok.extend(vec![b'x'; MAX_LINE - 2]);
    ok.extend_from_slice(b"\r\n");
    let mut over = b"c\t".to_vec();
    over.extend(vec![b'x'; MAX_LINE]);
    over.push(b'\n');
    for chunk in [1, 2, 7, 4096, 4097, 8192] {
        let mut d = LineDecoder::new();
        let mut out = Vec::new();
        for c in ok.chunks(chunk) {
            out.extend(d.push(c));
            assert!(d.pending() <= MAX_LINE + 1);
        }
        assert_eq!(out.len(), 1, "chunk {chunk}");
        assert!(out[0].is_ok(), "chunk {chunk}: {:?}", out[0]);
        let mut d = LineDecoder::new();
        let mut out = Vec::new();
        for c in over.chunks(chunk) {
            out.extend(d.push(c));
            assert!(d.pending() <= MAX_LINE + 1);
        }
        assert_eq!(out, vec![Err(Dropped::Overlong)], "chunk {chunk}");
        assert!(d.is_closed() && d.pending() == 0);
    }
}

/// fuzz/line_protocol invariant: accepted relpaths are normalised and re-validate to
/// themselves (inputs from the seed corpus that exercise `..`-like names).
#[test]
fn relpaths_re_validate_to_themselves() {
    for p in ["..a/b..", "a/./b//", "...", ". /x", "a/.../b", "a\r/b"] {
        let n = validate_relpath(p).unwrap();
        assert_eq!(validate_relpath(&n), Ok(n.clone()));
        assert!(!n.split('/').any(|c| c == ".." || c == "." || c.is_empty()));
    }
    for p in ["..", "a/..", "../a", "a/../b", "/a", "a\0"] {
        assert!(validate_relpath(p).is_err(), "{p:?}");
    }
    let n = parse_line(b"c\t./..a//b/\r\n").unwrap().unwrap();
    assert_eq!(n.path.as_deref(), Some("..a/b"));
}
