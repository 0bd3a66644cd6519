//! The `mammoflow` binary: parse arguments, run the command, print errors as a chain and exit 2.

fn main() {
    tune_malloc();
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
