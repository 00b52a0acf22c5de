//! What the room sees: the screen's rotation and QR code, and the language
//! of the texts.

use super::super::ScreenConfig;
use super::super::raw::{RawScreen, RawStation};
use super::Problems;
use crate::domain::Language;
use std::time::Duration;

pub(super) fn screen(raw: &RawScreen, p: &mut Problems) -> ScreenConfig {
    let rotate = *raw.rotate_s.get_ref();
    if rotate > 3600 {
        p.add(
            raw.rotate_s.span(),
            format!("rotate_s = {rotate}: at most 3600 (an hour per poll); 0 turns rotation off"),
        );
    }
    ScreenConfig {
        enabled: raw.enabled,
        fullscreen: raw.fullscreen,
        rotate: (rotate > 0).then(|| Duration::from_secs(rotate)),
        qr: raw.qr,
    }
}

pub(super) fn language(raw: &RawStation, p: &mut Problems) -> Language {
    raw.language.get_ref().parse().unwrap_or_else(|e| {
        p.add(raw.language.span(), format!("{e}"));
        Language::En
    })
}
