//! Streaming generations ([`GenerationStream`]) and the per-provider [`CircuitBreaker`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_core::Stream;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::error::{AgentError, ProviderError};
use crate::request::Delta;
use crate::think::ThinkSplitter;

/// What a streaming generation yields before its end.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// A piece of the reply (text or reasoning), as it arrives (or, for a cache hit, as it
    /// was stored).
    Delta(Delta),
    /// An attempt failed or its reply was rejected after some deltas: every delta since the
    /// start (or the last `Retry`) is void, and the reply starts over.
    Retry {
        /// The attempt that starts now (2 for the first retry).
        attempt: u32,
        /// Why the previous attempt did not count.
        reason: String,
    },
}

/// One item of a [`GenerationStream`]: events, then the whole result.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem<T> {
    /// A delta or a retry.
    Event(GenerationEvent),
    /// The end: the assembled, validated result (a `Reply` or a `Generation`).
    Done(T),
}

/// Where the retry loop sends events of a streaming call.
pub(crate) type EventSender = mpsc::UnboundedSender<GenerationEvent>;

/// A generation as a stream: [`StreamItem::Event`]s as the reply arrives, then one
/// [`StreamItem::Done`] with the same result the non-streaming call returns (or one error).
///
/// Reasoning a model writes inline as `<think>…</think>` comes out as
/// [`Delta::Reasoning`], and the text deltas put together are the result's text (see
/// [`split_think`](crate::split_think)), live and replayed alike.
///
/// The generation runs on its own task; dropping the stream stops it and closes the
/// connection to the server. A reply that did not finish is never cached.
///
/// ```no_run
/// # async fn demo(agent: prompt_agent::TemplateAgent, vars: prompt_agent::Vars) -> Result<(), prompt_agent::AgentError> {
/// use futures_util::StreamExt;
/// use prompt_agent::{Delta, GenerateOptions, GenerationEvent, StreamItem};
///
/// let mut stream = agent.generate_stream("write_scene", &vars, &GenerateOptions::default());
/// while let Some(item) = stream.next().await {
///     match item? {
///         StreamItem::Event(GenerationEvent::Delta(Delta::Text(text))) => print!("{text}"),
///         StreamItem::Event(GenerationEvent::Delta(Delta::Reasoning(_) | Delta::ToolCall(_))) => {}
///         StreamItem::Event(GenerationEvent::Retry { .. }) => println!("\n[again]"),
///         StreamItem::Done(generation) => println!("\n{} ms", generation.latency_ms),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GenerationStream<T> {
    events: mpsc::UnboundedReceiver<GenerationEvent>,
    events_done: bool,
    result: oneshot::Receiver<Result<T, AgentError>>,
    finished: bool,
    task: tokio::task::JoinHandle<()>,
    hit: Arc<AtomicBool>,
    think: ThinkSplitter,
    /// Deltas split off the last event, not yet handed out.
    ready: std::collections::VecDeque<Delta>,
}

impl<T: Send + 'static> GenerationStream<T> {
    /// Runs `work` on its own task; `work` gets the sender of the events.
    pub(crate) fn spawn<F, Fut>(work: F) -> Self
    where
        F: FnOnce(EventSender) -> Fut,
        Fut: Future<Output = Result<T, AgentError>> + Send + 'static,
    {
        let (tx, events) = mpsc::unbounded_channel();
        let (done, result) = oneshot::channel();
        let fut = work(tx);
        let task = tokio::spawn(async move {
            let _ = done.send(fut.await);
        });
        Self {
            events,
            events_done: false,
            result,
            finished: false,
            task,
            hit: Arc::default(),
            think: ThinkSplitter::default(),
            ready: std::collections::VecDeque::new(),
        }
    }

    /// Runs `work` on its own task; `work` gets the sender of the events and the flag it
    /// sets before it replays a reply that did not stream from the provider for this call.
    pub(crate) fn spawn_with_hit<F, Fut>(work: F) -> Self
    where
        F: FnOnce(EventSender, Arc<AtomicBool>) -> Fut,
        Fut: Future<Output = Result<T, AgentError>> + Send + 'static,
    {
        let hit = Arc::new(AtomicBool::new(false));
        let flag = hit.clone();
        let mut stream = Self::spawn(move |events| work(events, flag));
        stream.hit = hit;
        stream
    }

    /// Whether the reply is a replay (a cache hit, or an identical call's reply) rather
    /// than the provider's own stream for this call. Known from the first event on (a
    /// server can choose its response headers by it); always `false` for plain
    /// [`Agent`](crate::Agent) streams.
    pub fn is_replay(&self) -> bool {
        self.hit.load(Ordering::Acquire)
    }

    /// Waits for the end, dropping the events: the same result as the non-streaming call.
    pub async fn finish(mut self) -> Result<T, AgentError> {
        use futures_util::StreamExt;
        while let Some(item) = self.next().await {
            if let StreamItem::Done(value) = item? {
                return Ok(value);
            }
        }
        Err(AgentError::Shared(
            "the generation ended without a result".to_owned(),
        ))
    }
}

impl<T> Drop for GenerationStream<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> Stream for GenerationStream<T> {
    type Item = Result<StreamItem<T>, AgentError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while this.ready.is_empty() && !this.events_done {
            match this.events.poll_recv(cx) {
                Poll::Ready(Some(GenerationEvent::Delta(delta))) => {
                    this.think.push(delta, &mut this.ready);
                }
                Poll::Ready(Some(retry @ GenerationEvent::Retry { .. })) => {
                    // The attempt's deltas are void: so is what the splitter held of them.
                    this.think = ThinkSplitter::default();
                    return Poll::Ready(Some(Ok(StreamItem::Event(retry))));
                }
                Poll::Ready(None) => {
                    this.events_done = true;
                    this.think.finish(&mut this.ready);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if let Some(delta) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(StreamItem::Event(GenerationEvent::Delta(delta)))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.result).poll(cx) {
            Poll::Ready(result) => {
                this.finished = true;
                Poll::Ready(Some(match result {
                    Ok(result) => result.map(StreamItem::Done),
                    Err(_) => Err(AgentError::Shared(
                        "the generation task stopped before its end".to_owned(),
                    )),
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Stops calling a provider that keeps failing. After `threshold` consecutive failed attempts
/// (connection errors, timeouts, stalls, broken streams, 5xx) it opens for `cooldown`: calls
/// fail at once with [`ProviderError::CircuitOpen`], naming when the next try is. When the
/// time is up one probe call goes through; its success closes the circuit, its failure opens
/// it again. An answer of any other kind (a 4xx, a reply) shows the server is up and closes it.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Permission to make one call; say how it went with [`CircuitBreaker::record`]. A pass
/// dropped without a record (a cancelled probe) lets the next caller probe.
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.state.lock().probing = false;
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures (0 never opens) for
    /// `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    /// Whether a call may go now; the error names `provider` and the time left.
    pub(crate) fn admit(&self, provider: &str) -> Result<Pass<'_>, ProviderError> {
        let mut state = self.state.lock();
        let probe = match state.open_until {
            None => false,
            Some(until) => {
                let now = Instant::now();
                if now < until || state.probing {
                    return Err(ProviderError::CircuitOpen {
                        provider: provider.to_owned(),
                        failures: state.failures,
                        retry_in: until.saturating_duration_since(now),
                    });
                }
                state.probing = true;
                true
            }
        };
        Ok(Pass {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    /// Records the outcome of an admitted call.
    pub(crate) fn record(&self, mut pass: Pass<'_>, outcome: Result<(), &ProviderError>) {
        pass.recorded = true;
        let mut state = self.state.lock();
        state.probing = false;
        match outcome {
            Err(e) if e.is_provider_failure() => {
                state.failures = state.failures.saturating_add(1);
                if self.threshold > 0 && (pass.probe || state.failures >= self.threshold) {
                    state.open_until = Some(Instant::now() + self.cooldown);
                }
            }
            _ => {
                state.failures = 0;
                state.open_until = None;
            }
        }
    }

    /// Whether calls fail at once right now.
    pub fn is_open(&self) -> bool {
        self.state
            .lock()
            .open_until
            .is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error() -> ProviderError {
        ProviderError::Server {
            provider: "p".into(),
            status: 500,
            message: "x".into(),
        }
    }

    #[test]
    fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let b = CircuitBreaker::new(3, Duration::from_millis(50));
        for _ in 0..3 {
            let pass = b.admit("p").expect("closed");
            b.record(pass, Err(&server_error()));
        }
        assert!(b.is_open());
        let e = b.admit("p").unwrap_err();
        assert_eq!(e.kind(), "circuit_open");
        assert!(e.to_string().contains("3 consecutive failures"), "{e}");
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit("p").expect("probe");
        assert!(b.admit("p").is_err(), "one probe at a time");
        b.record(probe, Err(&server_error()));
        assert!(b.is_open(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit("p").expect("probe");
        b.record(probe, Ok(()));
        assert!(!b.is_open());
        assert!(b.admit("p").is_ok());
    }

    #[test]
    fn client_errors_and_dropped_probes_do_not_keep_it_shut() {
        let b = CircuitBreaker::new(2, Duration::from_millis(20));
        let pass = b.admit("p").expect("closed");
        b.record(pass, Err(&server_error()));
        let bad_request = ProviderError::BadRequest {
            provider: "p".into(),
            status: 400,
            message: "x".into(),
        };
        let pass = b.admit("p").expect("closed");
        b.record(pass, Err(&bad_request));
        let pass = b.admit("p").expect("a 4xx reset the count");
        b.record(pass, Err(&server_error()));
        assert!(!b.is_open());
        let pass = b.admit("p").expect("closed");
        b.record(pass, Err(&server_error()));
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(30));
        drop(b.admit("p").expect("probe, then cancelled"));
        assert!(b.admit("p").is_ok(), "the next caller may probe");
    }
}
