//! A small HTTP load generator for `benches/serve`: N connections send
//! one request after another for a while; prints requests a second and
//! latency percentiles as one JSON line.
//!
//!     hammer URL [METHOD] [CONNECTIONS] [SECONDS] [ACCEPT]

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(url) = args.get(1).cloned() else {
        eprintln!("usage: hammer URL [METHOD] [CONNECTIONS] [SECONDS] [ACCEPT]");
        std::process::exit(2);
    };
    let method = args.get(2).cloned().unwrap_or_else(|| "HEAD".into());
    let connections: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10);
    let accept = args
        .get(5)
        .cloned()
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::HEAD);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap_or_else(|e| {
            eprintln!("hammer: {e}");
            std::process::exit(1)
        });
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, method, accept) =
                (client.clone(), url.clone(), method.clone(), accept.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < until {
                    let started = Instant::now();
                    let sent = client
                        .request(method.clone(), &url)
                        .header("Accept", &accept)
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            latencies.push(started.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((latencies, failed)) = task.await {
            all.extend(latencies);
            errors += failed;
        }
    }
    all.sort();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"requests\": {}, \"rps\": {:.0}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"errors\": {errors}}}",
        all.len(),
        all.len() as f64 / seconds as f64,
        at(0.50),
        at(0.99)
    );
}
