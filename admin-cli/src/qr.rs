//! The QR code of an otpauth URI: for the terminal and as a PNG file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Luma};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use zeroize::Zeroizing;

use crate::error::Error;

/// SGR: black foreground on a bright white background.
const DARK_ON_LIGHT: &str = "\x1b[30;107m";
/// SGR: back to the terminal's colours.
const RESET: &str = "\x1b[0m";

/// Pixels per QR module in the PNG.
const PNG_MODULE_PIXELS: u32 = 8;

/// The QR code of `data` (which holds a secret).
pub struct Qr(QrCode);

impl Qr {
    pub fn new(data: &str) -> Result<Self, Error> {
        QrCode::new(data.as_bytes()).map(Qr).map_err(Error::Qr)
    }

    /// Two modules per character cell with Unicode half blocks, with the
    /// quiet zone, in explicit colours: dark modules are blocks in black on
    /// a bright white background, line by line, so that the code is dark on
    /// light as scanners expect whatever the terminal's own colours (a QR
    /// code drawn in the terminal's foreground is inverted on a light
    /// terminal, and many scanners, zbar among them, cannot read it).
    pub fn to_terminal(&self) -> Zeroizing<String> {
        let plain = Zeroizing::new(
            self.0
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Dark)
                .light_color(Dense1x2::Light)
                .quiet_zone(true)
                .build(),
        );
        let mut text = Zeroizing::new(String::with_capacity(plain.len() * 2));
        for (i, line) in plain.lines().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(DARK_ON_LIGHT);
            text.push_str(line);
            text.push_str(RESET);
        }
        text
    }

    /// Writes a greyscale PNG (black on white, with the quiet zone).
    pub fn write_png(&self, file: PngFile) -> Result<(), Error> {
        let image = self
            .0
            .render::<Luma<u8>>()
            .quiet_zone(true)
            .module_dimensions(PNG_MODULE_PIXELS, PNG_MODULE_PIXELS)
            .build();
        let (width, height) = image.dimensions();
        let pixels = Zeroizing::new(image.into_raw());
        let PngFile { path, file } = file;
        let mut writer = BufWriter::new(file);
        let written = PngEncoder::new(&mut writer)
            .write_image(&pixels, width, height, ExtendedColorType::L8)
            .and_then(|()| writer.flush().map_err(image::ImageError::IoError));
        if let Err(source) = written {
            drop(writer);
            // Best effort: do not leave part of the secret behind.
            let _ = std::fs::remove_file(&path);
            return Err(Error::PngWrite { path, source });
        }
        Ok(())
    }
}

/// A new, empty PNG file, readable by its owner only.
pub struct PngFile {
    path: PathBuf,
    file: File,
}

impl PngFile {
    /// Creates `path` with mode 0600; refuses to touch an existing file (or
    /// symlink).
    pub fn create(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => Error::PngExists {
                    path: path.to_path_buf(),
                },
                _ => Error::PngCreate {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        Ok(PngFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Removes the file again, when it will not be written after all.
    pub fn discard(self) {
        drop(self.file);
        // Best effort: it is empty, so a leftover holds no secret.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const URI: &str = "otpauth://totp/Example:alice?secret=JBSWY3DPEHPK3PXP&issuer=Example";

    #[test]
    fn terminal_rendering_is_dark_on_light_with_a_quiet_zone() {
        let qr = Qr::new(URI).unwrap();
        let text = qr.to_terminal();
        // Every line in black on bright white, then the terminal's colours.
        let lines: Vec<&str> = text
            .lines()
            .map(|l| {
                l.strip_prefix("\x1b[30;107m")
                    .and_then(|l| l.strip_suffix("\x1b[0m"))
                    .unwrap()
            })
            .collect();
        // The first line is all quiet zone: light, blanks only (the
        // background); dark modules are blocks.
        assert!(lines[0].chars().all(|c| c == ' '));
        assert!(lines[2].contains('\u{2588}'));
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // Two modules per line, quiet zone of 4 modules on each side.
        let modules = qr.0.width() + 8;
        assert_eq!(width, modules);
        assert_eq!(lines.len(), modules.div_ceil(2));
    }

    #[test]
    fn png_is_created_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qr.png");

        let qr = Qr::new(URI).unwrap();
        qr.write_png(PngFile::create(&path).unwrap()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

        assert!(matches!(
            PngFile::create(&path),
            Err(Error::PngExists { .. })
        ));
        // The refused attempt left the file alone.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
