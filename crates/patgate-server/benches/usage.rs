//! What recording usage costs the decision path: decision throughput with usage recording
//! off and on, measured in one run on the 1M-token synthetic world of
//! `patgate-core/benches/workload` (`PATGATE_BENCH_SCALE` scales it).
//!
//! "Off" is `Engine::decide_presented` over the request mix; "on" is the same plus what the
//! decision handler adds for an allowed request: `Usage::record` (last use, client address,
//! the permission at its boundary) appended to the thread's stripe, while a background
//! thread folds the stripes into the per-token aggregate every 100 ms and takes the
//! aggregate every 5 s, as `patgate serve` does (`PATGATE_BENCH_FLUSH_MS` changes the
//! latter). The background thread's work counts: it competes for the same two cores. Rounds alternate off and on so that drift of this
//! shared machine hits both alike; the medians and their ratio are printed for two mixes:
//! - `mix`: the decision benchmark's mix (about a quarter allowed);
//! - `allowed`: allowed requests only (every decision records: the worst case);
//!
//! each with one thread and with two threads deciding at once (contention on the shards).
//! Target: recording costs at most 5 % (ratio on/off >= 0.95).
//!
//! Run: `cargo bench -p patgate-server --bench usage` (`PATGATE_BENCH_ROUNDS`, default 9).

#![expect(clippy::print_stdout, reason = "benchmarks print their figures")]

#[expect(dead_code, reason = "the decision benchmark's own helpers are not all used here")]
#[path = "../../patgate-core/benches/workload/mod.rs"]
mod workload;

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use patgate_core::{Basis, Engine, Timestamp};
use patgate_server::usage::Usage;
use workload::{BenchResult, Item, MixContext, Rng, SEED, Sizes, build_world, env_f64, world_now};

/// Requests per mix, and passes over it per measurement.
const MIX: usize = 4096;
const PASSES: usize = 60;

/// Decides every request of `mix` `PASSES` times; with `usage`, records each allowed one as
/// the handler does. Returns decisions per second.
fn run(engine: &Engine, mix: &[Item], now: Timestamp, usage: Option<&Usage>) -> f64 {
    let started = Instant::now();
    for pass in 0..PASSES {
        for (index, item) in mix.iter().enumerate() {
            let request = item.request();
            let decision = engine.decide_presented(black_box(&item.token), &request, now);
            if let Some(usage) = usage
                && let (Ok(basis), Some(token), Some(owner)) = (decision.outcome, decision.token, decision.user)
            {
                // Eight client addresses, as a few CI runners would use.
                let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, ((index + pass) % 8) as u8));
                let used: &[_] = if matches!(basis, Basis::FineGrained | Basis::Legacy) {
                    std::slice::from_ref(&item.permission)
                } else {
                    &[]
                };
                usage.record(token, owner, now, Some(ip), used, decision.boundary);
            }
            black_box(decision);
        }
    }
    (mix.len() * PASSES) as f64 / started.elapsed().as_secs_f64()
}

/// `threads` threads run `run` at once; the summed throughput.
fn run_threads(engine: &Engine, mix: &[Item], now: Timestamp, usage: Option<&Usage>, threads: usize) -> f64 {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(|| run(engine, mix, now, usage))).collect();
        handles.into_iter().map(|handle| handle.join().unwrap_or(0.0)).sum()
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> BenchResult<()> {
    let scale = env_f64("PATGATE_BENCH_SCALE", 1.0);
    let rounds = env_f64("PATGATE_BENCH_ROUNDS", 9.0).max(1.0) as usize;
    let sizes = Sizes::at_scale(scale);
    let now = world_now()?;
    let started = Instant::now();
    let (engine, model, _) = build_world(&sizes, now)?;
    println!("world: scale {scale}, built in {:.1} s", started.elapsed().as_secs_f64());
    let context = MixContext::new(&sizes, &engine, &model);
    let mut rng = Rng::new(SEED);
    let mix = context.items(&mut rng, MIX)?;
    let mut allowed = Vec::with_capacity(MIX);
    while allowed.len() < MIX {
        for item in context.items(&mut rng, MIX)? {
            if allowed.len() < MIX && engine.decide_presented(&item.token, &item.request(), now).is_allowed() {
                allowed.push(item);
            }
        }
    }
    let allowed_in_mix =
        mix.iter().filter(|item| engine.decide_presented(&item.token, &item.request(), now).is_allowed());
    println!("mix: {MIX} requests, {} allowed; allowed: {MIX} requests", allowed_in_mix.count());

    let flush = Duration::from_millis(env_f64("PATGATE_BENCH_FLUSH_MS", 5000.0).max(1.0) as u64);
    println!("flush: every {} ms", flush.as_millis());
    let usage = Arc::new(Usage::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (usage, stop) = (usage.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut taken = 0_usize;
            let mut last = Instant::now();
            let (started, mut busy) = (Instant::now(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let folding = Instant::now();
                usage.compact();
                if last.elapsed() >= flush {
                    taken += usage.take().len();
                    last = Instant::now();
                }
                busy += folding.elapsed();
            }
            (taken, busy.as_secs_f64() / started.elapsed().as_secs_f64())
        })
    };

    println!("rounds: {rounds}, each {PASSES} passes over the requests, off and on alternating");
    println!("medians of the rounds, and the ratio of the best rounds (less sensitive to neighbours' load):");
    println!(
        "{:<10} {:>7} {:>16} {:>16} {:>9} {:>9}",
        "requests", "threads", "off (dec/s)", "on (dec/s)", "on/off", "best"
    );
    let mut worst = f64::INFINITY;
    for (name, requests) in [("mix", &mix), ("allowed", &allowed)] {
        for threads in [1, 2] {
            let (mut off, mut on) = (Vec::new(), Vec::new());
            // One warm-up of each, not counted.
            run_threads(&engine, requests, now, None, threads);
            run_threads(&engine, requests, now, Some(&usage), threads);
            for _ in 0..rounds {
                off.push(run_threads(&engine, requests, now, None, threads));
                on.push(run_threads(&engine, requests, now, Some(&usage), threads));
            }
            let best = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
            let best_ratio = best(&on) / best(&off);
            let (off, on) = (median(&mut off), median(&mut on));
            let ratio = on / off;
            worst = worst.min(ratio);
            println!("{name:<10} {threads:>7} {off:>16.0} {on:>16.0} {ratio:>9.3} {best_ratio:>9.3}");
        }
    }
    // The recording alone, per call, on the allowed requests' decisions: what the decision
    // path pays, without the decision's own variance around it.
    let decided: Vec<_> =
        allowed.iter().map(|item| (item, engine.decide_presented(&item.token, &item.request(), now))).collect();
    let (mut record_ns, mut decide_ns) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        for pass in 0..PASSES {
            for (index, (item, decision)) in decided.iter().enumerate() {
                let (Some(token), Some(owner)) = (decision.token, decision.user) else { continue };
                let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, ((index + pass) % 8) as u8));
                usage.record(token, owner, now, Some(ip), std::slice::from_ref(&item.permission), decision.boundary);
            }
        }
        record_ns.push(started.elapsed().as_nanos() as f64 / (PASSES * decided.len()) as f64);
        decide_ns.push(1e9 / run(&engine, &allowed, now, None));
    }
    let (record, decide) = (median(&mut record_ns), median(&mut decide_ns));
    println!(
        "per call (medians): record {record:.1} ns, decide (allowed) {decide:.1} ns: recording adds {:.1} %",
        100.0 * record / decide
    );
    stop.store(true, Ordering::Relaxed);
    let (taken, busy) = flusher.join().unwrap_or((0, 0.0));
    println!("background: {taken} token aggregates taken; folding and taking used {:.1} % of one core", busy * 100.0);
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "target: recording costs <= 5 %: per call {:.1} %: {}; throughput on/off, worst median {worst:.3}: {}",
        100.0 * record / decide,
        verdict(record / decide <= 0.05),
        verdict(worst >= 0.95)
    );
    Ok(())
}
