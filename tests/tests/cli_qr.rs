//! The QR code `otpctl enroll` draws on the terminal scans on dark and on
//! light terminals: its output is drawn into an image as a terminal with
//! either colour scheme would show it, and the real `zbarimg` (Debian
//! package zbar-tools) decodes it to the otpauth URI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use otpd_tests::*;

/// A terminal's own colours as grey levels.
#[derive(Clone, Copy, Debug)]
struct Theme {
    foreground: u8,
    background: u8,
}

const DARK_TERMINAL: Theme = Theme {
    foreground: 220,
    background: 25,
};
const LIGHT_TERMINAL: Theme = Theme {
    foreground: 25,
    background: 245,
};

/// Pixels per module: a character cell is one module wide and two high.
const SCALE: usize = 4;

/// The grey level of an SGR colour (30-37/90-97 foreground, 40-47/100-107
/// background: the index into the 16-colour palette), or `None` for the
/// terminal's own.
fn palette(index: u32) -> u8 {
    match index {
        0 => 0,
        7 => 200,
        8 => 100,
        15 => 255,
        _ => 128,
    }
}

/// Draws `lines` (text cells with SGR colour codes) as a terminal with
/// `theme` shows them, with a margin of the terminal's background; returns
/// the width, height and grey pixels.
fn draw(lines: &[&str], theme: Theme) -> (usize, usize, Vec<u8>) {
    let margin = 4;
    let cols = lines.iter().map(|l| cells(l, theme).len()).max().unwrap();
    let width = (cols + 2 * margin) * SCALE;
    let height = (lines.len() * 2 + 2 * margin) * SCALE;
    let mut pixels = vec![theme.background; width * height];
    for (row, line) in lines.iter().enumerate() {
        for (col, (top, bottom)) in cells(line, theme).into_iter().enumerate() {
            for (half, grey) in [(0, top), (1, bottom)] {
                for dy in 0..SCALE {
                    let y = ((row * 2 + half) + margin) * SCALE + dy;
                    let x = (col + margin) * SCALE;
                    pixels[y * width + x..y * width + x + SCALE].fill(grey);
                }
            }
        }
    }
    (width, height, pixels)
}

/// The (upper, lower) grey levels of each character cell of `line`.
fn cells(line: &str, theme: Theme) -> Vec<(u8, u8)> {
    let (mut fg, mut bg) = (theme.foreground, theme.background);
    let mut out = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            assert_eq!(chars.next(), Some('['));
            let params: String = chars.by_ref().take_while(|&c| c != 'm').collect();
            for p in params.split(';') {
                match p.parse::<u32>().unwrap() {
                    0 => (fg, bg) = (theme.foreground, theme.background),
                    39 => fg = theme.foreground,
                    49 => bg = theme.background,
                    n @ 30..=37 => fg = palette(n - 30),
                    n @ 90..=97 => fg = palette(n - 90 + 8),
                    n @ 40..=47 => bg = palette(n - 40),
                    n @ 100..=107 => bg = palette(n - 100 + 8),
                    n => panic!("SGR {n} in the QR code"),
                }
            }
            continue;
        }
        out.push(match c {
            ' ' => (bg, bg),
            '\u{2588}' => (fg, fg),
            '\u{2580}' => (fg, bg),
            '\u{2584}' => (bg, fg),
            other => panic!("{other:?} in the QR code"),
        });
    }
    out
}

/// What zbarimg reads in a PGM of `pixels`; `None` when it finds no code.
fn zbarimg(
    dir: &Path,
    name: &str,
    (width, height, pixels): (usize, usize, Vec<u8>),
) -> Option<String> {
    let path = dir.join(format!("{name}.pgm"));
    let mut pgm = format!("P5\n{width} {height}\n255\n").into_bytes();
    pgm.extend(pixels);
    std::fs::write(&path, pgm).unwrap();
    let out = Command::new("zbarimg")
        .args(["--raw", "-q", "-Sdisable", "-Sqrcode.enable"])
        .arg(&path)
        .output()
        .expect("zbarimg (Debian package zbar-tools)");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim_end().to_owned())
}

#[test]
fn the_terminal_qr_code_scans_on_dark_and_light_terminals() {
    let d = InProcess::start();
    let out = otpctl(d.socket())
        .args(["enroll", "root"])
        .stdin("")
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let qr: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    let uri = text
        .lines()
        .find_map(|l| l.strip_prefix("URI:        "))
        .unwrap();
    assert!(qr.len() > 10, "{text}");
    for (name, theme) in [("dark", DARK_TERMINAL), ("light", LIGHT_TERMINAL)] {
        assert_eq!(
            zbarimg(d.dir.path(), name, draw(&qr, theme)).as_deref(),
            Some(uri),
            "on a {name} terminal"
        );
    }
    // The renderer is no pushover: the same code in the terminal's own
    // colours, inverted, does not scan.
    let inverted: Vec<String> = qr
        .iter()
        .map(|l| {
            l.replace("\x1b[30;107m", "")
                .replace("\x1b[0m", "")
                .chars()
                .map(|c| match c {
                    ' ' => '\u{2588}',
                    '\u{2588}' => ' ',
                    '\u{2580}' => '\u{2584}',
                    '\u{2584}' => '\u{2580}',
                    other => other,
                })
                .collect()
        })
        .collect();
    let inverted: Vec<&str> = inverted.iter().map(String::as_str).collect();
    assert_eq!(
        zbarimg(d.dir.path(), "inverted", draw(&inverted, LIGHT_TERMINAL)),
        None
    );
    assert_eq!(
        zbarimg(
            d.dir.path(),
            "inverted-dark",
            draw(&inverted, DARK_TERMINAL)
        )
        .as_deref(),
        Some(uri),
        "light on dark scans"
    );
}
