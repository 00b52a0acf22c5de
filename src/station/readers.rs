//! The readers the Station knows: their state as the outputs show it, and
//! their settings, by id (the config's and those bound at runtime).

use std::collections::HashMap;
use std::sync::Arc;

use super::view::{ReaderState, ReaderStatus};
use crate::config::ReaderConfig;

/// The readers: their state as shown, and their settings, by id.
#[derive(Debug, Default)]
pub(super) struct Readers {
    pub(super) list: Vec<ReaderState>,
    index: HashMap<String, usize>,
    pub(super) cfgs: HashMap<String, ReaderConfig>,
}

impl Readers {
    fn state_of(r: &ReaderConfig) -> ReaderState {
        ReaderState {
            id: r.id.as_str().into(),
            status: ReaderStatus::Disconnected,
            binding: Arc::new(r.binding.clone()),
            protocol: r.protocol,
            device: r.device.display().to_string().into(),
            last_error: Some("not opened yet".into()),
            frames_ok: 0,
            frames_bad: 0,
            taps: 0,
        }
    }

    pub(super) fn add(&mut self, cfg: ReaderConfig) -> ReaderState {
        let state = Self::state_of(&cfg);
        self.index.insert(cfg.id.clone(), self.list.len());
        self.list.push(state.clone());
        self.cfgs.insert(cfg.id.clone(), cfg);
        state
    }

    pub(super) fn remove(&mut self, id: &str) {
        self.list.retain(|r| &*r.id != id);
        self.cfgs.remove(id);
        self.index = self
            .list
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.to_string(), i))
            .collect();
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut ReaderState> {
        let i = *self.index.get(id)?;
        self.list.get_mut(i)
    }

    pub(super) fn get(&self, id: &str) -> Option<&ReaderState> {
        self.list.get(*self.index.get(id)?)
    }

    pub(super) fn on_device(&self, device: &str) -> Option<&ReaderState> {
        self.list.iter().find(|r| &*r.device == device)
    }
}
