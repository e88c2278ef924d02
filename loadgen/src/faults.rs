//! A scenario's faults, applied on schedule during the load and undone
//! after `for_s`.

use crate::driver::Driver;
use crate::recorder::{Recorder, lock};
use crate::scenario::{Fault, FaultAction};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultEvent {
    pub at_s: f64,
    pub action: String,
    pub target: String,
    pub ok: bool,
    pub detail: String,
}

/// Starts every fault's timer; the tasks end when each fault is done.
pub fn spawn(
    faults: &[Fault],
    driver: &Arc<Driver>,
    recorder: &Arc<Recorder>,
    events: &Arc<Mutex<Vec<FaultEvent>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    faults
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, f)| {
            tokio::spawn(apply(
                i,
                f,
                driver.clone(),
                recorder.clone(),
                events.clone(),
            ))
        })
        .collect()
}

async fn apply(
    index: usize,
    fault: Fault,
    driver: Arc<Driver>,
    recorder: Arc<Recorder>,
    events: Arc<Mutex<Vec<FaultEvent>>>,
) {
    let load_started = recorder.start;
    let component = fault.component();
    tokio::time::sleep_until((load_started + Duration::from_secs_f64(fault.at_s)).into()).await;
    let started = Instant::now();
    let act = |action: FaultAction| {
        let driver = driver.clone();
        let events = events.clone();
        async move {
            let at_s = load_started.elapsed().as_secs_f64();
            let result = driver.fault(action, component).await;
            let name = format!("{action:?}").to_lowercase();
            eprintln!(
                "fault at {at_s:.1} s: {name} {component}: {}",
                if result.is_ok() { "done" } else { "failed" }
            );
            lock(&events).push(FaultEvent {
                at_s,
                action: name,
                target: component.to_string(),
                ok: result.is_ok(),
                detail: result.err().map(|e| e.to_string()).unwrap_or_default(),
            });
        }
    };
    act(fault.action).await;
    if let Some(for_s) = fault.for_s {
        tokio::time::sleep(Duration::from_secs_f64(for_s)).await;
        let undo = match fault.action {
            FaultAction::Kill | FaultAction::Stop => Some(FaultAction::Start),
            FaultAction::Pause => Some(FaultAction::Resume),
            _ => None,
        };
        if let Some(undo) = undo {
            act(undo).await;
        }
    }
    recorder.fault_done(index, started, Instant::now());
}
