//! Many nested containers at once through dockerd: leases, mounts and FUSE servers of parallel
//! creates never collide, and everything goes away afterwards. Prints per-container latencies.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;

fn summary(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!("{what}: n={} p50={:.1?} p95={:.1?} max={:.1?}", v.len(), percentile(&v, 50), percentile(&v, 95), v[v.len() - 1])
}

/// 50 parallel `docker run --rm` that each print their uid_map. They all wait for one another
/// (a barrier in a bind-mounted dir) before exiting, so the 50 run at the same time and their
/// ranges must be pairwise distinct (a freed range may otherwise be leased again).
#[test]
fn fifty_parallel_runs_get_distinct_ranges() {
    need_engines!("fifty_parallel_runs_get_distinct_ranges");
    const N: usize = 50;
    let dir = tempdir("barrier");
    let bind = format!("{}:/barrier", dir.path.display());
    let started = Instant::now();
    let seen: Arc<Mutex<Vec<Option<Duration>>>> = Arc::new(Mutex::new(vec![None; N]));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (bind, cid) = (bind.clone(), dir.path.join(format!("cid-{i}")));
            std::thread::spawn(move || {
                let script = format!("cat /proc/self/uid_map; touch /barrier/up-{i}; n=0; while [ ! -e /barrier/go ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done");
                let cid_s = cid.display().to_string();
                let o = run_cmd(
                    docker_cmd(&["run", "--rm", "--runtime", "nested", "--cidfile", &cid_s, "-v", &bind, BUSYBOX, "sh", "-c", &script]),
                    Duration::from_secs(300),
                );
                let id = std::fs::read_to_string(&cid).unwrap_or_default();
                (o, id)
            })
        })
        .collect();
    // Watch the barrier: when each container got going, then let them all exit together.
    let all_up = wait_for(240, || {
        let mut s = seen.lock().unwrap();
        for (i, slot) in s.iter_mut().enumerate() {
            if slot.is_none() && dir.path.join(format!("up-{i}")).exists() {
                *slot = Some(started.elapsed());
            }
        }
        s.iter().all(Option::is_some) || threads.iter().all(|t| t.is_finished())
    });
    let up_after = started.elapsed();
    std::fs::write(dir.path.join("go"), b"").unwrap();
    let results: Vec<(Out, String)> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    let total = started.elapsed();
    let failed: Vec<&Out> = results.iter().map(|(o, _)| o).filter(|o| o.code != 0).collect();
    assert!(failed.is_empty(), "{} of {N} parallel docker run failed; first: {:?}", failed.len(), failed[0]);
    assert!(all_up, "not all {N} containers reached the barrier within 240 s");
    let mut hosts: Vec<u64> = vec![];
    for (o, _) in &results {
        let f: Vec<u64> = o.stdout.split_whitespace().take(3).map(|x| x.parse().unwrap_or(0)).collect();
        assert!(f.len() == 3 && f[0] == 0 && f[1] >= POOL_START as u64 && f[2] == 65536, "bad uid_map {:?}", o.stdout);
        hosts.push(f[1]);
    }
    hosts.sort();
    let mut distinct = hosts.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), N, "uid_map host ids of {N} concurrent containers are not distinct: {hosts:?}");
    // docker run --rm returns after the removal: nothing of any of them is left
    for (_, id) in &results {
        assert!(!id.is_empty(), "no --cidfile id");
        assert_no_traces(id.trim());
    }
    let up: Vec<Duration> = seen.lock().unwrap().iter().map(|d| d.unwrap()).collect();
    println!("fifty_parallel_runs_get_distinct_ranges: all {N} up after {up_after:.1?}, all removed after {total:.1?}");
    println!("  {}", summary("docker run -> container running (from test start)", up));
    println!("  {}", summary("docker run --rm total, incl. barrier wait and removal", results.iter().map(|(o, _)| o.elapsed).collect()));
}

/// 10 nested DinD containers started in parallel: each inner dockerd answers and runs a
/// container, ranges are disjoint, and `docker rm -f` leaves nothing.
#[test]
fn ten_parallel_dind() {
    need_engines!("ten_parallel_dind");
    const N: usize = 10;
    let started = Instant::now();
    let threads: Vec<_> = (0..N)
        .map(|i| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let c = start_dind(&format!("par-dind-{i}"), 60);
                let ready = t0.elapsed();
                let o = c.exec(&["docker", "run", "--rm", "busybox", "true"]);
                (c, ready, t0.elapsed(), o)
            })
        })
        .collect();
    let mut ctrs = vec![];
    let mut panics = vec![];
    for t in threads {
        match t.join() {
            Ok(r) => ctrs.push(r),
            Err(e) => panics.push(e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()),
        }
    }
    assert!(panics.is_empty(), "{} of {N} DinD containers failed to start:\n{}", panics.len(), panics.join("\n---\n"));
    for (c, _, _, o) in &ctrs {
        assert_eq!(o.code, 0, "inner docker run in {}: {o:?}", c.name);
    }
    let ranges: Vec<(u64, u64)> = ctrs.iter().map(|(c, ..)| range_of(c)).collect();
    for (i, a) in ranges.iter().enumerate() {
        assert_eq!(a.1, 65536);
        for b in &ranges[i + 1..] {
            assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "uid ranges overlap: {a:?} and {b:?}");
        }
    }
    println!("ten_parallel_dind: {N} ready and inner run done after {:.1?}", started.elapsed());
    println!("  {}", summary("docker run -d -> inner dockerd answers", ctrs.iter().map(|(_, r, ..)| *r).collect()));
    println!("  {}", summary("... + inner docker run --rm busybox true", ctrs.iter().map(|(_, _, d, _)| *d).collect()));
    let t0 = Instant::now();
    for (c, ..) in &ctrs {
        assert_rm_cleans(c);
    }
    println!("  docker rm -f of {N} DinD containers (sequential, with checks): {:.1?}", t0.elapsed());
}
