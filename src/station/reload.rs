//! The reload plan: what of a re-read config applies live (readers added,
//! removed, rebound or reopened; polls added; questions and labels;
//! `debounce_ms`) and what needs a restart (station id, data_dir, `[http]`,
//! `[network]`/`[hotplug]`, a poll's rule or answer ids, a removed poll).
//!
//! Synchronous like the rest of the state: the Station task performs the
//! reader changes it returns and announces the events.

use super::api::{ReaderCtl, ReloadReport};
use super::state::State;
use super::view::Event;
use crate::config::{Config, ReaderConfig};

impl State {
    /// Apply what can be applied of a new config; say what cannot. Returns
    /// the report, the reader tasks to stop and start, and what to announce.
    pub(super) fn reload(&mut self, new: Config) -> (ReloadReport, Vec<ReaderCtl>, Vec<Event>) {
        let mut report = ReloadReport::default();
        let mut ctl = Vec::new();
        let mut events = Vec::new();
        let old = std::mem::replace(&mut self.config, new.clone());
        for what in restart_needed(&old, &new) {
            report
                .needs_restart
                .push(format!("{what} changed: restart to apply"));
        }
        if new.station.debounce != self.recent.window() {
            self.recent.set_window(new.station.debounce);
            report.applied.push(format!(
                "debounce now {} ms",
                new.station.debounce.as_millis()
            ));
        }
        // Polls: new ones are added, labels and questions change live; a
        // changed rule or answer list, or a removed poll, takes a restart.
        for def in &new.polls {
            match self.polls.iter().position(|p| p.id == def.id) {
                None => {
                    self.tallies.add_poll(def);
                    self.polls.push(def.clone());
                    report.applied.push(format!("poll {} added", def.id));
                }
                Some(i) => {
                    let mut current = self.polls[i].clone();
                    current.open = def.open;
                    if &current == def {
                        continue;
                    }
                    if self.tallies.relabel(def) {
                        let open = self.polls[i].open;
                        self.polls[i] = def.clone();
                        self.polls[i].open = open;
                        report
                            .applied
                            .push(format!("poll {}: question and labels updated", def.id));
                        if let Some(view) = self.tallies.view(&def.id) {
                            events.push(Event::Tally(view));
                        }
                    } else {
                        report.needs_restart.push(format!(
                            "poll {}: rule or answer ids changed: restart to apply",
                            def.id
                        ));
                    }
                }
            }
        }
        for p in &self.polls {
            if !new.polls.iter().any(|n| n.id == p.id) {
                report
                    .needs_restart
                    .push(format!("poll {} removed: restart to apply", p.id));
            }
        }
        // Readers named by the old config: removed, rebound or restarted.
        for r in &old.readers {
            if !new.readers.iter().any(|n| n.id == r.id) {
                self.readers.remove(&r.id);
                ctl.push(ReaderCtl::Stop(r.id.clone()));
                report.applied.push(format!("reader {} removed", r.id));
            }
        }
        for r in &new.readers {
            match self.readers.cfgs.get(&r.id).cloned() {
                Some(cur) if cur == *r => {}
                Some(cur) => {
                    let only_binding = ReaderConfig {
                        binding: r.binding.clone(),
                        ..cur
                    } == *r;
                    if let Some(state) = self.readers.get_mut(&r.id) {
                        state.binding = std::sync::Arc::new(r.binding.clone());
                        state.device = r.device.display().to_string().into();
                        state.protocol = r.protocol;
                    }
                    self.readers.cfgs.insert(r.id.clone(), r.clone());
                    if only_binding {
                        report.applied.push(format!("reader {} rebound", r.id));
                    } else {
                        ctl.push(ReaderCtl::Stop(r.id.clone()));
                        ctl.push(ReaderCtl::Start(r.clone()));
                        report
                            .applied
                            .push(format!("reader {} reopened with new settings", r.id));
                    }
                }
                None => {
                    let device = r.device.display().to_string();
                    if let Some(other) = self.readers.on_device(&device) {
                        report.needs_restart.push(format!(
                            "reader {} not added: device {device} is used by reader {}",
                            r.id, other.id
                        ));
                        continue;
                    }
                    self.readers.add(r.clone());
                    ctl.push(ReaderCtl::Start(r.clone()));
                    report.applied.push(format!("reader {} added", r.id));
                }
            }
        }
        (report, ctl, events)
    }
}

/// The parts of the config that only take effect at start.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if new.station.id != old.station.id {
        out.push("[station] id");
    }
    if new.station.data_dir != old.station.data_dir {
        out.push("[station] data_dir");
    }
    if new.http.listen != old.http.listen
        || new.http.admin_token_file != old.http.admin_token_file
        || new.http.request_timeout != old.http.request_timeout
    {
        out.push("[http]");
    }
    if new.network.watch != old.network.watch
        || new.network.debounce != old.network.debounce
        || new.hotplug.enabled != old.hotplug.enabled
        || new.hotplug.pattern != old.hotplug.pattern
    {
        out.push("[network] / [hotplug]");
    }
    out
}
