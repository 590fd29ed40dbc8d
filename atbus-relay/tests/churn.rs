//! A relay that has served churn is as good as a fresh one: `CHURN_NODES` nodes (default 1000)
//! connect and leave, three times. Afterwards the relay holds no more peers than before; its heap
//! does not grow from one round to the next (within 20 %), and what it keeps of the nodes that
//! left (their tombstones: where their streams stood, should they come back) is a few hundred
//! bytes each; its idle thread uses almost no CPU. While the nodes are connected and idle, and
//! after they left, a pair of nodes exchanges requests and replies through it at least 0.8× as
//! fast as another pair through a relay that only ever served that pair, measured in turns.
//!
//! The relays run in this process, each on a thread of its own (a current-thread runtime): a
//! relay's CPU time is that thread's, and its heap the bytes that thread allocated and did not
//! free (a counting allocator). `CHURN_NODES=5000 cargo test --release -p atbus-relay --test churn
//! -- --nocapture` runs the figure and prints what it measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use atbus_core::runtime::Node;
use atbus_relay::Relay;

mod support;

use support::{node, recv};

/// Counts what the relay's thread allocates and frees.
struct Counting;

/// Bytes each relay's thread allocated and has not freed.
static RELAY_HEAP: [AtomicIsize; 2] = [AtomicIsize::new(0), AtomicIsize::new(0)];

thread_local! {
    /// The relay whose thread this is (its index in `RELAY_HEAP`), if any.
    static RELAY: Cell<Option<usize>> = const { Cell::new(None) };
}

fn count(bytes: isize) {
    if let Some(relay) = RELAY.try_with(Cell::get).ok().flatten() {
        RELAY_HEAP[relay].fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: as the caller promised for `pointer` and `layout`.
        unsafe { System.dealloc(pointer, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        // SAFETY: as the caller promised for `pointer`, `layout` and `size`.
        let new = unsafe { System.realloc(pointer, layout, size) };
        if !new.is_null() {
            count(size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `CHURN_NODES`, or 1000.
fn nodes_wanted() -> usize {
    std::env::var("CHURN_NODES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000)
}

/// A relay, on a thread of its own.
struct RelayThread {
    /// Its index in `RELAY_HEAP`.
    index: usize,
    relay: Relay,
    address: String,
    /// The CPU clock of the relay's thread.
    clock: libc::clockid_t,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayThread {
    fn start(index: usize) -> Self {
        use std::os::unix::thread::JoinHandleExt;
        let (started, relay) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            RELAY.with(|relay| relay.set(Some(index)));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                // The replay cache remembers every hello's nonce for the timestamp window (5
                // minutes), up to 65,536 of them: bounded, but thousands of handshakes would
                // dominate the heap measured here. A small one leaves the peers' state to see
                // (the handshakes beyond it ask for a confirm).
                let mut engine = atbus_core::engine::EngineConfig::default();
                engine.auth.replay_cache_size = 64;
                let relay = Relay::builder()
                    .engine(engine)
                    .listen("tcp://127.0.0.1:0")
                    .token(support::token())
                    .start()
                    .await
                    .expect("relay");
                started.send(relay.clone()).expect("the test waits");
                let _ = stopped.await;
                relay.shutdown_within(Duration::from_millis(100)).await;
            });
        });
        let relay: Relay = relay.recv().expect("the relay starts");
        let address = relay.local_addresses()[0].to_string();
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is alive (it waits for `stop`); `clock` is written by pointer.
        let found = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
        assert_eq!(found, 0, "the relay thread's CPU clock");
        Self {
            index,
            relay,
            address,
            clock,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Bytes the relay's thread allocated and has not freed.
    fn heap(&self) -> isize {
        RELAY_HEAP[self.index].load(Ordering::Relaxed)
    }

    /// CPU time the relay's thread has used.
    fn cpu(&self) -> Duration {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock` is the live thread's clock; `time` is written by pointer.
        let read = unsafe { libc::clock_gettime(self.clock, &mut time) };
        assert_eq!(read, 0);
        Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
    }

    /// The share of a core the relay's thread uses over the next `period`.
    async fn cpu_share(&self, period: Duration) -> f64 {
        let (cpu, start) = (self.cpu(), Instant::now());
        tokio::time::sleep(period).await;
        (self.cpu() - cpu).as_secs_f64() / start.elapsed().as_secs_f64()
    }
}

impl Drop for RelayThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Two nodes through a relay: `pair-a` asks, `pair-b` answers.
struct Pair {
    a: Node,
    b: Node,
}

impl Pair {
    async fn new(relay: &RelayThread) -> Self {
        let a = node("pair-a", &relay.address).await;
        let b = node("pair-b", &relay.address).await;
        let answering = b.clone();
        tokio::spawn(async move {
            while let Some(request) = answering.recv().await {
                let _ = answering.send(&request.source, "reply").await;
            }
        });
        Self { a, b }
    }

    /// Requests answered in `period`, per second.
    async fn rate(&self, period: Duration) -> f64 {
        let start = Instant::now();
        let mut count = 0u32;
        while start.elapsed() < period {
            self.a.send("pair-b", "request").await.expect("request");
            let reply = recv(&self.a).await;
            assert_eq!(reply.data, b"reply"[..]);
            count += 1;
        }
        f64::from(count) / start.elapsed().as_secs_f64()
    }

    async fn shutdown(&self) {
        self.a.shutdown_within(Duration::from_millis(50)).await;
        self.b.shutdown_within(Duration::from_millis(50)).await;
    }
}

/// The request rates of `pair` and of `reference`, each the best of three runs of half a second
/// taken in turns (the machine is shared: its load drifts).
async fn rates(pair: &Pair, reference: &Pair) -> (f64, f64) {
    let (mut best, mut best_reference) = (0f64, 0f64);
    let period = Duration::from_millis(500);
    for _ in 0..3 {
        best = best.max(pair.rate(period).await);
        best_reference = best_reference.max(reference.rate(period).await);
    }
    (best, best_reference)
}

/// Waits until the relay holds `peers` peers (the departed ones linger a few seconds).
async fn wait_for_peers(relay: &Relay, peers: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay.peer_count() != peers {
        assert!(
            Instant::now() < deadline,
            "the relay still holds {} peers, {peers} expected",
            relay.peer_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_served_churn_is_as_good_as_a_fresh_one() {
    let count = nodes_wanted();
    let limit = support::raise_fd_limit();
    assert!(
        limit >= 2 * count as u64 + 256,
        "the open-file limit ({limit}) is too low for {count} nodes: raise the hard limit"
    );
    // The relay under test, and a reference that only ever serves its pair.
    let relay = RelayThread::start(0);
    let reference = RelayThread::start(1);
    let pair = Pair::new(&relay).await;
    let reference_pair = Pair::new(&reference).await;
    pair.rate(Duration::from_millis(500)).await;
    // The pair's state, and the heap of a relay that served nothing else, settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peers = relay.relay.peer_count();
    let fresh_heap = relay.heap();
    let fresh_idle = relay.cpu_share(Duration::from_secs(1)).await;

    let mut heaps = Vec::new();
    let (mut loaded, mut loaded_idle, mut connected_heap) = ((0.0, 0.0), 0.0, 0);
    let start = Instant::now();
    for round in 0..3 {
        let nodes = support::crowd(count, &relay.address).await;
        // (A node is connected once the relay's accept is in; the relay, once the node's confirm
        // is.)
        wait_for_peers(&relay.relay, peers + count).await;
        if round == 0 {
            connected_heap = relay.heap();
            loaded_idle = relay.cpu_share(Duration::from_secs(1)).await;
            loaded = rates(&pair, &reference_pair).await;
        }
        let mut stopping = tokio::task::JoinSet::new();
        for node in nodes {
            stopping.spawn(async move { node.shutdown_within(Duration::from_millis(50)).await });
        }
        while stopping.join_next().await.is_some() {}
        wait_for_peers(&relay.relay, peers).await;
        heaps.push(relay.heap());
    }
    let churn_time = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = relay.cpu_share(Duration::from_secs(2)).await;
    let after = rates(&pair, &reference_pair).await;
    let heap = relay.heap();
    let kept_per_node = (heap - fresh_heap) as f64 / count as f64;

    eprintln!(
        "{count} nodes came and went 3 times in {churn_time:?}.\n\
         relay peers: {peers} before, {} after ({} dropped, {} tombstones)\n\
         relay heap: {} KiB fresh, {} KiB with {count} nodes ({:.1} KiB per node), after each \
         round {:?} KiB; {kept_per_node:.0} B kept per node that left\n\
         relay CPU: {:.2} % of a core idle, {:.2} % with {count} idle nodes, {:.2} % idle after\n\
         the pair's round trips/s, against a fresh relay's pair at the same time: \
         {:.0} / {:.0} ({:.2}×) with {count} idle nodes, {:.0} / {:.0} ({:.2}×) after",
        relay.relay.peer_count(),
        relay.relay.stats().peers_dropped,
        relay.relay.departed_peers(),
        fresh_heap / 1024,
        connected_heap / 1024,
        (connected_heap - fresh_heap) as f64 / 1024.0 / count as f64,
        heaps.iter().map(|heap| heap / 1024).collect::<Vec<_>>(),
        fresh_idle * 100.0,
        loaded_idle * 100.0,
        idle * 100.0,
        loaded.0,
        loaded.1,
        loaded.0 / loaded.1,
        after.0,
        after.1,
        after.0 / after.1,
    );
    assert_eq!(relay.relay.peer_count(), peers);
    assert!(
        (heap as f64) < heaps[0] as f64 * 1.2,
        "the relay's heap grows with churn: {heaps:?} after each round"
    );
    assert!(
        kept_per_node < 512.0,
        "the relay keeps {kept_per_node:.0} B per node that left"
    );
    assert!(
        idle < 0.03,
        "the idle relay uses {:.1} % of a core",
        idle * 100.0
    );
    assert!(
        loaded.0 >= 0.8 * loaded.1,
        "{:.0} round trips/s with {count} idle nodes, {:.0} on a fresh relay",
        loaded.0,
        loaded.1
    );
    assert!(
        after.0 >= 0.8 * after.1,
        "{:.0} round trips/s after the churn, {:.0} on a fresh relay",
        after.0,
        after.1
    );
    pair.shutdown().await;
    reference_pair.shutdown().await;
}
