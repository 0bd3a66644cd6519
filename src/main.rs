//! The `mammoflow` binary: parse arguments, run the command, print errors as a chain and exit 2.

fn main() {
    tune_malloc();
    quiet_candle_pool();
    std::process::exit(mammoflow::cli::main());
}

/// Keeps freed image buffers in the process instead of returning them to the kernel after every item.
///
/// Stages allocate and free multi-megabyte planes per item; with glibc's defaults each such buffer is
/// mmap'ed and unmapped (or the heap trimmed) every time, and every reuse page-faults again: about 0.8 ms
/// per 1-megapixel u8 plane here, more than a rotation itself. Raising the mmap and trim thresholds keeps
/// those pages mapped; peak memory is unchanged (see `bench dicom`), only returned to the OS later.
fn tune_malloc() {
    // SAFETY: mallopt only changes allocator tunables; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// candle 0.11 runs its elementwise ops on its own thread pool, whose idle worker spins for 25,000
/// `pause`s (about half a millisecond) after every op before parking. Between candle's ops our kernels
/// run on rayon's threads, and on this 2-CPU machine that spinning took 12 % of a DeepLabv3 training
/// step's samples away from them (`perf`). Parking at once made our steps 0-15 % faster (DeepLabv3 242-285
/// against 278-295 ms, FCN-8s 400-402 against 426-465 ms) and candle's own path (`MAMMOFLOW_KERNELS=candle`,
/// all small ops) up to 10 % slower (U-Net 576-600 against 493-565 ms): the default path wins. A value
/// the user set is kept.
fn quiet_candle_pool() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}
