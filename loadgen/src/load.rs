//! The load stage: presses sent as the plan says, phase after phase.
//!
//! - Open model (`rate`): an arrival-rate executor. One scheduler walks the
//!   plan's due times and starts each press as its own task on a shared
//!   connection pool. Nothing is dropped: when the generator falls behind
//!   (the in-flight cap is reached, or the machine is busy), the press is
//!   sent late and its latency still counts from when it was due (wrk2's
//!   rule); how late each send started is recorded as schedule lag. goose
//!   has no arrival-rate executor: its users are closed loops, so a rate
//!   would need as many users as there can be presses in flight, and a slow
//!   answer would hold back the next send.
//! - Closed model (`users`): a goose attack for the phase, users sharing
//!   one client, each pressing as soon as its last answer came.

use crate::recorder::Recorder;
use crate::schedule::PhasePlan;
use anyhow::Context;
use button_client::{Api, Rejected};
use goose::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Presses in flight at once, at most, unless a scenario's
/// `[load] max_in_flight` says otherwise. Each holds a connection
/// (HTTP/1.1). 1,024 is five times what 20,000 presses/s at 10 ms need;
/// at this machine's ceiling 8,192 connections cost the generator 50 µs a
/// press against 27 µs with 512, and the service more too. Scenarios whose
/// faults stall presses for seconds raise it (the fault scenarios do), so
/// that a stall shows as latency rather than as the generator falling
/// behind.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Where presses go: one API per service instance.
#[derive(Clone)]
pub struct Target {
    apis: Vec<Api>,
    pow: bool,
    max_in_flight: usize,
}

impl Target {
    pub fn new(service_urls: &[String], pow: bool, max_in_flight: usize) -> anyhow::Result<Target> {
        let max_in_flight = max_in_flight.max(1);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(max_in_flight)
            .tcp_nodelay(true)
            .build()
            .context("building the load's HTTP client")?;
        Ok(Target {
            apis: service_urls
                .iter()
                .map(|u| Api::with_http(http.clone(), u.clone()))
                .collect(),
            pow,
            max_in_flight,
        })
    }

    fn api(&self, i: u64) -> &Api {
        &self.apis[(i % self.apis.len() as u64) as usize]
    }
}

/// Runs every phase of the plan in turn; returns when every press sent has
/// its answer (or its failure).
pub async fn run(recorder: Arc<Recorder>, target: Target) -> anyhow::Result<()> {
    let in_flight = Arc::new(Semaphore::new(target.max_in_flight));
    let mut sequence = 0u64;
    for (index, phase) in recorder.plan.phases.clone().iter().enumerate() {
        if phase.rate.is_some() {
            open_phase(&recorder, &target, index, phase, &in_flight, &mut sequence).await;
        } else {
            closed_phase(&recorder, &target, index, phase).await?;
        }
    }
    // Every permit back: every press answered.
    let _all = in_flight
        .acquire_many(target.max_in_flight as u32)
        .await
        .context("waiting for presses in flight")?;
    Ok(())
}

async fn open_phase(
    recorder: &Arc<Recorder>,
    target: &Target,
    index: usize,
    phase: &PhasePlan,
    in_flight: &Arc<Semaphore>,
    sequence: &mut u64,
) {
    let start = recorder.start;
    for i in 0..phase.planned() {
        let due = start + phase.due(i);
        // The timer's resolution is a millisecond: a press due within half
        // of one goes now rather than a whole tick late.
        if due > Instant::now() + Duration::from_micros(500) {
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        recorder.sending(index, due, Instant::now());
        let recorder = recorder.clone();
        let api = target.api(*sequence).clone();
        let pow = target.pow;
        *sequence += 1;
        tokio::spawn(async move {
            press(&recorder, &api, pow, index, due).await;
            drop(permit);
        });
    }
}

/// One press, timed from `due`, its outcome recorded.
async fn press(recorder: &Recorder, api: &Api, pow: bool, phase: usize, due: Instant) {
    // With proof of work on, a press costs what it costs a real client:
    // fetching a challenge and solving it count in its latency.
    let challenge = if pow {
        match api.solved_challenge().await {
            Ok(c) => Some(c),
            Err(_) => {
                recorder.answered(phase, due);
                recorder.error(phase, "challenge_failed", false);
                return;
            }
        }
    } else {
        None
    };
    let answer = api.press_with(challenge).await;
    recorder.answered(phase, due);
    match answer {
        Ok(a) => recorder.accept(&a, due, phase),
        Err(Rejected { status: 0, .. }) => recorder.error(phase, "transport", true),
        Err(Rejected { status: 202, .. }) => recorder.error(phase, "bad_202_body", false),
        Err(Rejected { status, code }) => recorder.error(phase, &format!("{status}_{code}"), false),
    }
}

/// A goose attack for one closed-model phase: `users` reached over
/// `ramp_s`, held for the rest of the phase.
async fn closed_phase(
    recorder: &Arc<Recorder>,
    target: &Target,
    index: usize,
    phase: &PhasePlan,
) -> anyhow::Result<()> {
    let users = phase.users.unwrap_or(1).max(1);
    let duration_s = phase.duration().as_secs();
    let ramp = phase.ramp_s.min(duration_s);
    let plan = format!("{users},{ramp};{users},{};0,0", duration_s - ramp);
    let host = target.apis[0].url("");
    let args = [
        "--host",
        host.as_str(),
        "--test-plan",
        plan.as_str(),
        "--quiet",
        "--no-metrics",
        "--no-telnet",
        "--no-websocket",
        "--no-gzip",
    ];
    let configuration = goose::config::GooseConfiguration::parse_args_default(&args)
        .map_err(|e| anyhow::anyhow!("goose configuration: {e}"))?;
    let shared = recorder.clone();
    let target = target.clone();
    let transaction = Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let recorder = shared.clone();
        let target = target.clone();
        let i = user.weighted_users_index as u64;
        Box::pin(async move {
            let due = Instant::now();
            recorder.sending(index, due, due);
            press(&recorder, target.api(i), target.pow, index, due).await;
            Ok(())
        })
    }))
    .set_name("press");
    GooseAttack::initialize_with_config(configuration)?
        .set_client_builder_without_cookies(
            goose::client::GooseClientBuilder::new().without_cookies(),
        )?
        .register_scenario(goose::goose::Scenario::new("press").register_transaction(transaction))
        .execute()
        .await
        .with_context(|| format!("running phase {} (closed model)", phase.name))?;
    Ok(())
}
