//! Rendering of every family and series.

use super::*;
use crate::core::readings::Estimate;
use crate::core::telemetry::Telemetry;
use std::time::Duration;

#[test]
fn renders_every_family_with_protocol_labels() {
    let pool = Pool::new(32 << 10, 1 << 20, 8 << 20);
    let m = Metrics::new(pool.clone(), Arc::new(Profiles::new(true, true, 10, 60)));
    let _lease = pool.try_lease(64 << 10).unwrap();
    m.transfer(
        Direction::Upload,
        Protocol::H3,
        1 << 20,
        Duration::from_millis(10),
    );
    m.error(Direction::Download, Protocol::H2, "not_found");
    m.network(
        Protocol::H1,
        &Estimate {
            bandwidth: 1000,
            rtt: Duration::from_millis(20),
            loss: 0.25,
            measured: true,
        },
    );
    let _c = m.connection(Protocol::H3);
    m.request(Route::Download, Agent::Browser, Protocol::H3);
    m.request(Route::Download, Agent::Browser, Protocol::H3);
    let text = m.render().unwrap();
    for want in [
        "xferd_upload_bytes_total{protocol=\"h3\"} 1048576",
        "xferd_download_errors_total{code=\"not_found\",protocol=\"h2\"} 1",
        "xferd_network_reliability_ratio{protocol=\"h1\"} 0.75",
        "xferd_buffer_pool_bytes_in_use 131072",
        "xferd_connections_active{protocol=\"h3\"} 1",
        "xferd_range_requests_total{protocol=\"h2\"} 0",
        "xferd_requests_total{agent=\"browser\",protocol=\"h3\",route=\"download\"} 2",
        "xferd_requests_total{agent=\"curl\",protocol=\"h1\",route=\"page\"} 0",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[test]
fn labelled_families_have_zero_series_from_the_start() {
    let pool = Pool::new(32 << 10, 1 << 20, 8 << 20);
    let m = Metrics::new(pool, Arc::new(Profiles::new(true, true, 10, 60)));
    let text = m.render().unwrap();
    for p in Protocol::ALL {
        let p = p.label();
        for code in ALL_CODES {
            for dir in ["upload", "download"] {
                let want =
                    format!("xferd_{dir}_errors_total{{code=\"{code}\",protocol=\"{p}\"}} 0");
                assert!(text.contains(&want), "missing {want}");
            }
        }
        for fam in [
            "xferd_buffer_size_changes_total",
            "xferd_upload_duration_seconds_count",
            "xferd_upload_chunk_size_bytes_count",
            "xferd_download_throughput_bytes_per_second_count",
            "xferd_streams_active",
        ] {
            let want = format!("{fam}{{protocol=\"{p}\"}} 0");
            assert!(text.contains(&want), "missing {want}");
        }
    }
    assert!(text.contains("xferd_storage_retries_total{op=\"commit\"} 0"));
    assert!(
        !text.contains("xferd_buffer_size_optimal_bytes{"),
        "a latest-reading gauge appears with its first reading"
    );
    m.buffer_size(Protocol::H2, 65536, true);
    m.range_request(Protocol::H1);
    m.chunk(Protocol::H1, 1000, Duration::from_millis(1));
    let text = m.render().unwrap();
    for want in [
        "xferd_buffer_size_optimal_bytes{protocol=\"h2\"} 65536",
        "xferd_buffer_size_changes_total{protocol=\"h2\"} 1",
        "xferd_range_requests_total{protocol=\"h1\"} 1",
        "xferd_upload_chunk_size_bytes_count{protocol=\"h1\"} 1",
        "xferd_upload_bytes_total{protocol=\"h1\"} 1000",
    ] {
        assert!(text.contains(want), "missing {want}");
    }
    assert!(!text.contains("xferd_buffer_size_optimal_bytes{protocol=\"h1\"}"));
    assert!(
        !text.contains("xferd_network_rtt_seconds{"),
        "no reading yet"
    );
}
