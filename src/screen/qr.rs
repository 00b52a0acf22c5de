//! The QR code of the public results address, drawn pixel-exact (whole
//! pixels per module, so a phone camera and zbar read it cleanly).

use gtk::{gdk, glib};
use gtk4 as gtk;

/// A texture of the code of `url`, about `size` pixels square (with the
/// standard quiet zone of 4 modules); `None` if `url` is too long.
#[must_use]
pub fn texture(url: &str, size: i32) -> Option<gdk::MemoryTexture> {
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    let modules = code.width();
    let quiet = 4;
    let side = modules + 2 * quiet;
    let px = (usize::try_from(size).unwrap_or(0) / side).max(2);
    let w = side * px;
    let mut rgb = vec![255u8; w * w * 3];
    for y in 0..modules {
        for x in 0..modules {
            if code[(x, y)] != qrcode::Color::Dark {
                continue;
            }
            for dy in 0..px {
                let row = ((quiet + y) * px + dy) * w;
                for dx in 0..px {
                    let i = (row + (quiet + x) * px + dx) * 3;
                    rgb[i..i + 3].fill(0);
                }
            }
        }
    }
    let side_px = i32::try_from(w).ok()?;
    Some(gdk::MemoryTexture::new(
        side_px,
        side_px,
        gdk::MemoryFormat::R8g8b8,
        &glib::Bytes::from_owned(rgb),
        w * 3,
    ))
}
