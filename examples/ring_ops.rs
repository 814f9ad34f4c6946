//! A fixed ring workload for instruction counting: `n` MBO-sized records published and read back
//! on one thread over a heap region, either one `try_read` per record or `read_batch` every 256.
//! Run by `benches/callgrind.sh`, which subtracts an `n = 0` run to get instructions per record.

use std::sync::Arc;

use tickpipe::shm::ring::{
    HeaderState, HeapRegion, Region, RingGeometry, RingReader, RingWriter, StartAt, WriterIdentity,
    read_header,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch = args.next().is_some_and(|a| a == "batch");
    let geometry = RingGeometry::new(1 << 20, 1024, 0).expect("geometry");
    let region = Arc::new(HeapRegion::zeroed(geometry.total_len()));
    let mut writer = RingWriter::init(region.clone(), geometry, &[], WriterIdentity::default(), 0)
        .expect("init");
    let Ok(HeaderState::Ready(info)) = read_header(region.words()) else {
        panic!("ring header not ready after init");
    };
    let mut reader = RingReader::new(region, info, StartAt::Oldest);
    let mut payload = [0u8; 56];
    let mut buf = [0u8; 1024];
    let mut scratch = vec![0u8; 256 * 80];
    let mut sum = 0u64;
    let mut i = 0;
    while i < n {
        let burst = if batch { 256.min(n - i) } else { 1 };
        for k in 0..burst {
            payload[8..16].copy_from_slice(&(i + k).to_le_bytes());
            writer
                .publish(std::hint::black_box(&payload), i + k)
                .expect("publish");
        }
        if batch {
            reader
                .read_batch(&mut scratch, 256, |f, p| {
                    sum = sum.wrapping_add(f.seq ^ u64::from(p[8]))
                })
                .expect("read_batch");
        } else {
            let f = reader.try_read(&mut buf).expect("try_read");
            sum = sum.wrapping_add(f.seq ^ u64::from(buf[8]));
        }
        i += burst;
    }
    println!("{sum}");
}
