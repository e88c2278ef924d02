//! The load stage: presses sent as the plan says, phase after phase.
//!
//! - Open model (`rate`): an arrival-rate executor. The plan's presses are
//!   dealt round-robin to sending threads (`[load] threads`), each with its
//!   own single-threaded runtime and its own keep-alive connections
//!   (`wire`), so a press never crosses threads on its way out. Each thread
//!   walks its share of the due times and starts every press as its own
//!   task. Nothing is dropped: when the generator falls behind (the
//!   in-flight cap is reached, or the machine is busy), the press is sent
//!   late and its latency still counts from when it was due (wrk2's rule);
//!   how late each send started is recorded as schedule lag. goose has no
//!   arrival-rate executor: its users are closed loops, so a rate would
//!   need as many users as there can be presses in flight, and a slow
//!   answer would hold back the next send. An open phase with
//!   `endpoint = "live"` sends the service's trivial `GET /health/live`
//!   the same way instead: what the HTTP stack alone serves, to set
//!   presses against (its answers are served, never accepted presses).
//! - Closed model (`users`): a goose attack for the phase, users sharing
//!   one client, each pressing as soon as its last answer came.
//! - Several service instances: an open-model press whose instance fails
//!   at the connection level (refused, reset, no answer) goes to the next
//!   one, as a browser behind a load balancer would. Every press then
//!   carries an `Idempotency-Key` unique in the run, and its retries the
//!   same one: the service derives the request id from it, so an attempt
//!   whose outcome is unknown and its retry are one press, counted once.
//!   With one instance there is nowhere else to go: no key, no retry, and
//!   the press path measured stays the one without the idempotency guard.

use crate::recorder::Recorder;
use crate::scenario::{Endpoint, Scenario, ValidityLimits};
use crate::schedule::PhasePlan;
use crate::summary::{StopRule, step_miss};
use crate::wire::{Failure, PressClient};
use anyhow::Context;
use button_client::{Accepted, Api};
use bytes::Bytes;
use goose::prelude::*;
use hyper::header::HeaderValue;
use std::rc::Rc;
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Presses in flight at once, at most, unless a scenario's
/// `[load] max_in_flight` says otherwise. Each holds a connection
/// (HTTP/1.1). 1,024 is five times what 20,000 presses/s at 10 ms need.
/// Scenarios whose faults stall presses for seconds raise it (the fault
/// scenarios do), so that a stall shows as latency rather than as the
/// generator falling behind.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Where presses go (one API per service instance) and how they are sent.
#[derive(Clone)]
pub struct Target {
    urls: Vec<String>,
    apis: Vec<Api>,
    pow: bool,
    max_in_flight: usize,
    threads: usize,
    /// Prefix of every press's `Idempotency-Key` (several instances only):
    /// unique per run, so a stack that outlives a run (the external
    /// driver) never replays an earlier run's answer.
    key_prefix: Option<String>,
}

impl Target {
    /// `threads`: sending threads for open-model phases (0: one per core).
    pub fn new(
        service_urls: &[String],
        pow: bool,
        max_in_flight: usize,
        threads: usize,
    ) -> anyhow::Result<Target> {
        let max_in_flight = max_in_flight.max(1);
        // Checked here so that a bad URL fails the run before any load.
        PressClient::new(service_urls)?;
        Ok(Target {
            urls: service_urls.to_vec(),
            apis: general_apis(service_urls, max_in_flight)?,
            pow,
            max_in_flight,
            threads: sending_threads(threads, max_in_flight),
            key_prefix: (service_urls.len() > 1).then(run_nonce),
        })
    }

    fn api(&self, i: u64) -> &Api {
        pick(&self.apis, i)
    }
}

/// A run's mark for its keys: the clock in nanoseconds and the process id.
fn run_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("lg-{nanos:x}-{:x}", std::process::id())
}

/// Sending threads for `[load] threads` (0: one per core), at most one
/// per press in flight.
pub fn sending_threads(threads: usize, max_in_flight: usize) -> usize {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    threads.clamp(1, max_in_flight.max(1))
}

fn pick(apis: &[Api], i: u64) -> &Api {
    &apis[(i % apis.len() as u64) as usize]
}

/// Closed-model phases and proof-of-work challenges go through a general
/// client; open-model presses through `wire`. Each sending thread has its
/// own: a pooled connection's task runs on the runtime that opened it, and
/// a thread's runtime ends with the thread.
fn general_apis(service_urls: &[String], max_in_flight: usize) -> anyhow::Result<Vec<Api>> {
    let http = reqwest::Client::builder()
        .timeout(crate::wire::PRESS_TIMEOUT)
        .pool_max_idle_per_host(max_in_flight)
        .tcp_nodelay(true)
        .build()
        .context("building the load's HTTP client")?;
    Ok(service_urls
        .iter()
        .map(|u| Api::with_http(http.clone(), u.clone()))
        .collect())
}

/// What the load stage tells a sending thread.
enum Command {
    /// Send this thread's share of open phase `index`; answer once every
    /// one of them has started (answers may still be outstanding).
    Phase {
        index: usize,
        first: u64,
        sent: oneshot::Sender<()>,
    },
}

/// The ramp's stop rule (`[knee] stop_after_misses`) as the load applies
/// it: each step is judged at its planned end.
pub struct StopRamp {
    /// The objective's p99 press-to-SSE, ms.
    pub limit_ms: f64,
    pub limits: ValidityLimits,
    pub rule: StopRule,
}

impl StopRamp {
    pub fn of(scenario: &Scenario) -> Option<StopRamp> {
        let knee = scenario.knee.as_ref()?;
        Some(StopRamp {
            limit_ms: knee.p99_press_to_sse_ms,
            limits: scenario.validity.clone(),
            rule: StopRule::new(knee.stop_after()?),
        })
    }
}

/// Runs every phase of the plan in turn (until the stop rule, if any, ends
/// the ramp); returns when every press sent has its answer (or its
/// failure).
pub async fn run(
    recorder: Arc<Recorder>,
    target: Target,
    mut stop: Option<StopRamp>,
) -> anyhow::Result<()> {
    let senders: Vec<_> = (0..target.threads)
        .map(|k| spawn_sender(k, &recorder, &target))
        .collect::<anyhow::Result<_>>()?;
    let mut first = 0u64;
    for (index, phase) in recorder.plan.phases.clone().iter().enumerate() {
        if recorder.stopping() {
            break;
        }
        if phase.rate.is_some() {
            let mut started = Vec::new();
            for (commands, _) in &senders {
                let (sent, done) = oneshot::channel();
                commands
                    .send(Command::Phase { index, first, sent })
                    .map_err(|_| anyhow::anyhow!("a sending thread stopped"))?;
                started.push(done);
            }
            let step = !phase.warmup && phase.endpoint == Endpoint::Press;
            if let Some(stop) = stop.as_mut().filter(|_| step) {
                // Judged at the planned end, not once every send started:
                // a generator behind its plan would otherwise first send
                // the whole backlog the rule is there to avoid.
                tokio::time::sleep_until((recorder.start + phase.end).into()).await;
                let miss = step_miss(stop.limit_ms, &stop.limits, &recorder.step_so_far(index));
                if stop.rule.step(&phase.name, miss) {
                    recorder.stop_after(index, stop.rule.missed().to_vec());
                }
            }
            for done in started {
                done.await.context("a sending thread stopped mid-phase")?;
            }
            first += phase.planned();
        } else {
            closed_phase(&recorder, &target, index, phase).await?;
        }
    }
    // Closing every command channel first lets the threads finish
    // together, each once every press it sent is answered (a thread that
    // stopped early would take the connections it opened for the general
    // client with it).
    let (commands, threads): (Vec<_>, Vec<_>) = senders.into_iter().unzip();
    drop(commands);
    for thread in threads {
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("joining a sending thread")?
            .map_err(|_| anyhow::anyhow!("a sending thread panicked"))?;
    }
    Ok(())
}

type Sender = (mpsc::UnboundedSender<Command>, std::thread::JoinHandle<()>);

/// Sending thread `k` of `target.threads`: presses `k`, `k + threads`, ...
/// of each open phase, with its share of the in-flight cap.
fn spawn_sender(k: usize, recorder: &Arc<Recorder>, target: &Target) -> anyhow::Result<Sender> {
    let (commands, mut inbox) = mpsc::unbounded_channel::<Command>();
    let recorder = recorder.clone();
    let target = target.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a sending thread's runtime")?;
    let share = target.max_in_flight.div_ceil(target.threads);
    let apis = general_apis(&target.urls, share)?;
    let thread = std::thread::Builder::new()
        .name(format!("press-{k}"))
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let client = Rc::new(PressClient::new(&target.urls).expect("URLs checked"));
                let in_flight = Arc::new(Semaphore::new(share));
                while let Some(Command::Phase { index, first, sent }) = inbox.recv().await {
                    let phase = &recorder.plan.phases[index];
                    let presses = (k as u64..phase.planned()).step_by(target.threads);
                    for i in presses {
                        let due = recorder.start + phase.due(i);
                        // The timer's resolution is a millisecond: a press
                        // due within half of one goes now rather than a
                        // whole tick late.
                        if due > Instant::now() + Duration::from_micros(500) {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let Ok(permit) = in_flight.clone().acquire_owned().await else {
                            return;
                        };
                        // The ramp stopped: the rest of the plan, this
                        // phase's backlog included, is not sent.
                        if recorder.stopping() {
                            break;
                        }
                        recorder.sending(index, due, Instant::now());
                        let recorder = recorder.clone();
                        let client = client.clone();
                        // Each thread's presses go round every instance,
                        // so one stalled instance can hold every permit.
                        let n = first + i / target.threads as u64 + k as u64;
                        let instance = (n % client.instances() as u64) as usize;
                        match phase.endpoint {
                            Endpoint::Press => {
                                let api = pick(&apis, n).clone();
                                let pow = target.pow;
                                // The press's place in the run names it.
                                let key = target.key_prefix.as_ref().map(|p| {
                                    HeaderValue::from_str(&format!("{p}-{}", first + i))
                                        .expect("a key of visible ASCII")
                                });
                                tokio::task::spawn_local(async move {
                                    let sent = open_press(&client, instance, &api, pow, key).await;
                                    if sent.retried {
                                        recorder.retried_elsewhere();
                                    }
                                    if let (Ok(a), true) = (&sent.answer, sent.unknown) {
                                        recorder.maybe_stored_twice(&a.request_id);
                                    }
                                    record(&recorder, index, due, sent.answer);
                                    drop(permit);
                                });
                            }
                            Endpoint::Live => {
                                tokio::task::spawn_local(async move {
                                    let answer = client.live(instance).await;
                                    record_live(&recorder, index, due, answer);
                                    drop(permit);
                                });
                            }
                        }
                    }
                    let _ = sent.send(());
                }
                // Every permit back: every press answered.
                let _ = in_flight.acquire_many(share as u32).await;
            })
        })
        .context("starting a sending thread")?;
    Ok((commands, thread))
}

/// A press that could not be made: its challenge could not be had.
fn challenge_failed(e: anyhow::Error) -> Failure {
    Failure::NotSent {
        code: "challenge_failed",
        detail: format!("{e:#}"),
    }
}

/// How an open-model press ended, over every instance it tried.
pub struct Sent {
    pub answer: Result<Accepted, Failure>,
    /// It went to another instance after a connection-level failure.
    pub retried: bool,
    /// An attempt got no answer: it may have stored the press.
    pub unknown: bool,
}

/// One open-model press. With proof of work on, a press costs what it
/// costs a real client: fetching a challenge and solving it count in its
/// latency.
async fn open_press(
    client: &PressClient,
    instance: usize,
    api: &Api,
    pow: bool,
    key: Option<HeaderValue>,
) -> Sent {
    let body = if pow {
        match api.solved_challenge().await {
            Ok(pow) => Bytes::from(serde_json::json!({ "pow": pow }).to_string()),
            Err(e) => {
                return Sent {
                    answer: Err(challenge_failed(e)),
                    retried: false,
                    unknown: false,
                };
            }
        }
    } else {
        Bytes::from_static(b"{}")
    };
    press_around(client, instance, body, key).await
}

/// Attempts of one press, at most: every instance once, and room to wait
/// out a key still held by an attempt on an instance that died (the
/// service frees it after the produce deadline plus 5 s).
fn max_attempts(instances: usize) -> usize {
    2 * instances + 2
}

/// A press on `first`; with a key, sent to the next instance whenever the
/// one tried fails at the connection level. A `409 idempotency_in_progress`
/// after such a failure means the unanswered attempt still holds the key:
/// tried again too, since only a retry can learn how that attempt ended.
pub async fn press_around(
    client: &PressClient,
    first: usize,
    body: Bytes,
    key: Option<HeaderValue>,
) -> Sent {
    let instances = client.instances();
    let mut unknown = false;
    let mut attempt = 0;
    loop {
        let answer = client
            .press_keyed((first + attempt) % instances, body.clone(), key.as_ref())
            .await;
        attempt += 1;
        let again = key.is_some()
            && instances > 1
            && attempt < max_attempts(instances)
            && match &answer {
                Err(Failure::NotSent {
                    code: "connect_failed",
                    ..
                })
                | Err(Failure::NoAnswer(_)) => true,
                Err(Failure::Refused { status: 409, code }) => {
                    unknown && code == "idempotency_in_progress"
                }
                _ => false,
            };
        unknown |= matches!(answer, Err(Failure::NoAnswer(_)));
        if again {
            continue;
        }
        let answer = match answer {
            // Whatever the last attempt said, an earlier one may have
            // stored the press: the run counts it as unanswered.
            Err(f) if unknown && !matches!(f, Failure::NoAnswer(_)) => Err(Failure::NoAnswer(
                format!("an attempt got no answer, the last: {f:?}"),
            )),
            answer => answer,
        };
        return Sent {
            answer,
            retried: attempt > 1,
            unknown,
        };
    }
}

/// A closed-model press, through the general client.
async fn closed_press(api: &Api, pow: bool) -> Result<Accepted, Failure> {
    let challenge = if pow {
        Some(api.solved_challenge().await.map_err(challenge_failed)?)
    } else {
        None
    };
    api.press_with(challenge)
        .await
        .map_err(Failure::from_rejected)
}

/// A press's outcome, timed from `due`.
fn record(recorder: &Recorder, phase: usize, due: Instant, answer: Result<Accepted, Failure>) {
    recorder.answered(phase, due);
    match answer {
        Ok(a) => recorder.accept(&a, due, phase),
        Err(failure) => record_failure(recorder, phase, failure),
    }
}

/// A live check's outcome, timed from `due`: served, never accepted (the
/// ledger and the verdict are the presses').
fn record_live(recorder: &Recorder, phase: usize, due: Instant, answer: Result<(), Failure>) {
    recorder.answered(phase, due);
    match answer {
        Ok(()) => recorder.served(phase),
        Err(failure) => record_failure(recorder, phase, failure),
    }
}

fn record_failure(recorder: &Recorder, phase: usize, failure: Failure) {
    match failure {
        // Never written: no press can have been stored.
        Failure::NotSent { code, .. } => recorder.error(phase, code, false),
        Failure::NoAnswer(_) => recorder.error(phase, "transport", true),
        Failure::Refused { status: 202, .. } => recorder.error(phase, "bad_202_body", false),
        Failure::Refused { status, code } => {
            recorder.error(phase, &format!("{status}_{code}"), false)
        }
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
            let answer = closed_press(target.api(i), target.pow).await;
            record(&recorder, index, due, answer);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Plan;

    fn ramp(extra: &str) -> Scenario {
        crate::scenario::parse(
            std::path::Path::new("ramp.toml"),
            &format!(
                "[[phase]]\nname = \"a\"\nduration_s = 1\nrate = 40\n[[phase]]\nname = \"b\"\nduration_s = 1\nrate = 40\n[knee]\np99_press_to_sse_ms = 100\n{extra}"
            ),
        )
        .expect("parses")
    }

    /// Presses to a port nothing listens on all fail: every step misses.
    async fn run_against_nothing(scenario: &Scenario) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::new(Plan::of(scenario), Instant::now()));
        let target = Target::new(&["http://127.0.0.1:9".to_owned()], false, 16, 1).expect("target");
        run(recorder.clone(), target, StopRamp::of(scenario))
            .await
            .expect("load");
        recorder
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_ramp_sends_nothing_after_the_step_that_ended_it() {
        let recorder = run_against_nothing(&ramp("stop_after_misses = 1\n")).await;
        let (last, missed) = recorder.stopped().expect("stopped");
        assert_eq!(last, 0);
        assert_eq!(missed.len(), 1);
        // Failed presses, or on a busy machine a late generator first.
        assert_eq!(missed[0].phase, "a");
        assert!(recorder.phases[0].sent.load(Ordering::Relaxed) > 0);
        assert_eq!(recorder.phases[1].sent.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_rule_every_step_runs() {
        let recorder = run_against_nothing(&ramp("")).await;
        assert!(recorder.stopped().is_none());
        assert_eq!(recorder.phases[1].sent.load(Ordering::Relaxed), 40);
    }

    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const ACCEPTED: &str = r#"{"request_id":"r-1","partition":0,"offset":7,"accepted_at_ms":1}"#;

    /// A port nothing listens on: connections are refused.
    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    /// A service that reads each request (kept in `seen`) and answers 202,
    /// or, with `drop_unanswered`, reads it and hangs up.
    async fn service(drop_unanswered: bool, seen: Arc<Mutex<Vec<String>>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
                    if drop_unanswered {
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ACCEPTED}",
                        ACCEPTED.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    async fn around(urls: Vec<String>, key: Option<&'static str>) -> Sent {
        tokio::task::LocalSet::new()
            .run_until(async move {
                let client = PressClient::new(&urls).unwrap();
                let key = key.map(HeaderValue::from_static);
                press_around(&client, 0, Bytes::from_static(b"{}"), key).await
            })
            .await
    }

    #[tokio::test]
    async fn a_refused_press_goes_to_the_next_instance_with_its_key() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let live = service(false, seen.clone()).await;
        let sent = around(vec![closed_port(), live], Some("run-42")).await;
        assert_eq!(sent.answer.unwrap().request_id, "r-1");
        assert!(sent.retried && !sent.unknown);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains("idempotency-key: run-42"), "{}", seen[0]);
    }

    #[tokio::test]
    async fn an_unanswered_press_is_retried_under_the_same_key_and_marked_unknown() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let dying = service(true, seen.clone()).await;
        let live = service(false, seen.clone()).await;
        let sent = around(vec![dying, live], Some("run-43")).await;
        assert!(sent.answer.is_ok(), "{:?}", sent.answer.err());
        assert!(sent.retried && sent.unknown);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|r| r.contains("idempotency-key: run-43")));
    }

    #[tokio::test]
    async fn a_key_still_held_by_an_unanswered_attempt_is_tried_again() {
        // Instance 0 drops every press; instance 1 first says the key is
        // in flight (the dropped attempt's reservation), then accepts.
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let dying = service(true, dropped.clone()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let busy = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for n in 0.. {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let (status, body) = if n == 0 {
                    ("409 Conflict", r#"{"error":"idempotency_in_progress"}"#)
                } else {
                    ("202 Accepted", ACCEPTED)
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let sent = around(vec![dying, busy], Some("run-45")).await;
        assert!(sent.answer.is_ok(), "{:?}", sent.answer.err());
        assert!(sent.retried && sent.unknown);
        assert_eq!(dropped.lock().unwrap().len(), 2, "0, 1 (409), 0, 1 (202)");
    }

    #[tokio::test]
    async fn without_a_key_a_press_is_not_retried() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let live = service(false, seen.clone()).await;
        let sent = around(vec![closed_port(), live], None).await;
        assert!(
            matches!(sent.answer, Err(Failure::NotSent { .. })),
            "{:?}",
            sent.answer
        );
        assert!(!sent.retried && seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn every_instance_dead_after_an_unanswered_attempt_counts_as_unanswered() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let dying = service(true, seen.clone()).await;
        let sent = around(vec![dying, closed_port()], Some("run-44")).await;
        // The first attempt may have stored the press: not "not sent".
        assert!(
            matches!(sent.answer, Err(Failure::NoAnswer(_))),
            "{:?}",
            sent.answer
        );
        assert!(sent.retried && sent.unknown);
    }
}
