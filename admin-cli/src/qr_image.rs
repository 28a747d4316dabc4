//! QR codes read from a picture: a screenshot or a photo (PNG or JPEG) of
//! an authenticator app's export, for `otpctl import otpauth --image`.
//!
//! The file is read whole (a regular file, no symbolic link, at most
//! [`MAX_FILE_LEN`] bytes); its header gives the size in pixels, and a
//! picture of more than [`MAX_PIXELS`] is refused before a pixel is
//! decoded, so a small file that unpacks to gigabytes (a decompression
//! bomb) costs nothing. The decoder runs under the `image` crate's
//! allocation limit too. What the QR codes say is returned zeroizing: it
//! holds the keys.

use std::fs::OpenOptions;
use std::io::{Cursor, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits};
use zeroize::Zeroizing;

/// Largest file read: a 50-megapixel phone photo as JPEG is about 20 MB.
pub const MAX_FILE_LEN: u64 = 64 << 20;

/// Most pixels decoded (8660 x 5773, beyond today's phone cameras).
pub const MAX_PIXELS: u64 = 50_000_000;

/// Most bytes the decoder may allocate (RGBA of [`MAX_PIXELS`] is 200 MB).
const MAX_ALLOC: u64 = 512 << 20;

/// Why no QR code came out of a picture. Never holds what a code says.
#[derive(Debug, thiserror::Error)]
pub enum QrImageError {
    /// The file cannot be opened or read.
    #[error("{0}")]
    Io(std::io::Error),
    /// Not a regular file.
    #[error("not a regular file")]
    NotRegular,
    /// Longer than [`MAX_FILE_LEN`].
    #[error("larger than {MAX_FILE_LEN} bytes")]
    TooLarge,
    /// Neither PNG nor JPEG.
    #[error("not a PNG or JPEG picture")]
    Format,
    /// More than [`MAX_PIXELS`].
    #[error(
        "{width}x{height} pixels: more than the {} million looked at; \
         crop or scale the picture down to the QR code",
        MAX_PIXELS / 1_000_000
    )]
    TooManyPixels { width: u32, height: u32 },
    /// The picture is damaged or its decoder gave up.
    #[error("cannot decode the picture: {0}")]
    Decode(String),
    /// No QR code in the picture.
    #[error(
        "no QR code found in the picture; take it again, with the whole QR code sharp and \
         filling much of the frame"
    )]
    NoQrCode,
    /// A QR code was found but could not be read.
    #[error("a QR code was found but cannot be read ({0}); take the picture again")]
    Unreadable(String),
}

/// Reads `path` and returns what each QR code in it says, in the order
/// found.
pub fn read(path: &Path) -> Result<Vec<Zeroizing<String>>, QrImageError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(QrImageError::Io)?;
    if !file.metadata().map_err(QrImageError::Io)?.is_file() {
        return Err(QrImageError::NotRegular);
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(QrImageError::Io)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(QrImageError::TooLarge);
    }
    decode(&bytes)
}

/// The QR codes of a PNG or JPEG picture.
pub fn decode(bytes: &[u8]) -> Result<Vec<Zeroizing<String>>, QrImageError> {
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, QrImageError> {
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(QrImageError::Io)?;
        if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
            return Err(QrImageError::Format);
        }
        let mut limits = Limits::default();
        limits.max_alloc = Some(MAX_ALLOC);
        reader.limits(limits);
        Ok(reader)
    };
    // The size from the header first, then the pixels.
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| QrImageError::Decode(e.to_string()))?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(QrImageError::TooManyPixels { width, height });
    }
    let luma = reader()?
        .decode()
        .map_err(|e| QrImageError::Decode(e.to_string()))?
        .into_luma8();
    let (w, h) = (luma.width() as usize, luma.height() as usize);
    // rqrr is not known to panic, but it reads untrusted pixels: a panic
    // in it is an unreadable picture, not a crash.
    let found = catch_unwind(AssertUnwindSafe(|| {
        let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            luma.as_raw().get(y * w + x).copied().unwrap_or(255)
        });
        prepared
            .detect_grids()
            .iter()
            .map(|grid| {
                let mut out = Zeroizing::new(Vec::new());
                grid.decode_to(&mut *out)
                    .map_err(|e| QrImageError::Unreadable(e.to_string()))?;
                String::from_utf8(out.to_vec())
                    .map(Zeroizing::new)
                    .map_err(|_| QrImageError::Unreadable("not text".to_owned()))
            })
            .collect::<Vec<_>>()
    }))
    .map_err(|_| QrImageError::Unreadable("the QR reader failed".to_owned()))?;
    if found.is_empty() {
        return Err(QrImageError::NoQrCode);
    }
    // Every code must read: a picture of an export whose one code cannot be
    // read would otherwise import part of it without a word.
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: &image::DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_the_qr_code_of_a_png_and_a_jpeg() {
        let code = qrcode::QrCode::new(b"otpauth-migration://offline?data=CgA%3D").unwrap();
        let img = image::DynamicImage::ImageLuma8(
            code.render::<image::Luma<u8>>()
                .min_dimensions(300, 300)
                .build(),
        );
        let got = decode(&png(&img)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_str(), "otpauth-migration://offline?data=CgA%3D");
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        assert_eq!(
            decode(jpeg.get_ref()).unwrap()[0].as_str(),
            "otpauth-migration://offline?data=CgA%3D"
        );
    }

    #[test]
    fn refuses_what_is_not_a_picture_of_a_qr_code() {
        assert!(matches!(decode(b"otpauth://x"), Err(QrImageError::Format)));
        let blank = image::DynamicImage::new_luma8(200, 200);
        assert!(matches!(decode(&png(&blank)), Err(QrImageError::NoQrCode)));
        let mut cut = png(&blank);
        cut.truncate(cut.len() / 2);
        assert!(matches!(decode(&cut), Err(QrImageError::Decode(_))));
    }

    /// A PNG that claims 100000 x 100000 pixels (40 GB as RGBA) in a few
    /// hundred bytes is refused from its header, before decoding.
    #[test]
    fn refuses_a_decompression_bomb_before_decoding() {
        let mut bytes = png(&image::DynamicImage::new_luma8(1, 1));
        // IHDR's width and height (bytes 16..24), then its CRC (29..33).
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(QrImageError::TooManyPixels {
                width: 100_000,
                height: 100_000
            })
        ));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
